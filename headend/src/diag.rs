//! Diagnostics for engineers: `headend meter read` (one DLMS session, printed as JSON) and
//! `headend dlms decode` (any APDU or frame as JSON, deciphered when keys are given).

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Europe::Belgrade;
use dlms::{AttrRef, Authentication, ClientOptions, CosemDateTime, Obis, ScalerUnit, Session, TransportOptions, Value};
use serde_json::{json, Value as Json};

/// What to read and how to reach the meter.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub host: String,
    pub port: u16,
    pub hdlc: bool,
    pub client: u16,
    pub server_logical: u16,
    pub server_physical: u16,
    pub auth: Auth,
    pub max_pdu: u16,
    pub timeout: Duration,
    /// Objects: `OBIS` (class guessed: clock 8, profiles 7, x.x.1-99.8/7 registers 3, else data 1)
    /// or `class/OBIS/attribute`.
    pub objects: Vec<String>,
    pub profile: Option<ProfileRead>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Low { password: Vec<u8> },
    Gmac { system_title: [u8; 8], ek: [u8; 16], ak: [u8; 16], invocation_counter: u32 },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Low { .. } => "Low(<redacted>)",
            Auth::Gmac { .. } => "Gmac(<redacted>)",
        })
    }
}

#[derive(Debug, Clone)]
pub enum ProfileRead {
    Range { obis: Obis, from: DateTime<Utc>, to: DateTime<Utc> },
    Entries { obis: Obis, from: u32, to: u32 },
}

/// A parsed object reference.
pub fn parse_object(s: &str) -> Result<AttrRef, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [obis] => {
            let o: Obis = obis.parse().map_err(|e: dlms::Error| e.to_string())?;
            Ok(AttrRef::new(guess_class(o), o, 2))
        }
        [class, obis, attr] => Ok(AttrRef::new(
            class.parse().map_err(|_| format!("{s}: class must be a number"))?,
            obis.parse().map_err(|e: dlms::Error| e.to_string())?,
            attr.parse().map_err(|_| format!("{s}: attribute must be a number"))?,
        )),
        _ => Err(format!("{s}: expected OBIS or class/OBIS/attribute")),
    }
}

fn guess_class(o: Obis) -> u16 {
    let [a, _, c, d, _, _] = o.0;
    match (a, c, d) {
        (0, 1, 0) => 8,
        (_, 99, _) => 7,
        (0, 96, 3) if o.0[4] == 10 => 70,
        (1..=9, 1..=98, 7 | 8 | 9 | 29) => 3,
        _ => 1,
    }
}

/// Runs one session and returns its JSON report. Failures of single objects are reported per
/// object (by data-access-result); a failure of the session itself is an error.
pub async fn read(req: &ReadRequest) -> Result<Json, dlms::Error> {
    let transport = if req.hdlc {
        TransportOptions::Hdlc {
            client_address: u8::try_from(req.client).unwrap_or(16),
            server_logical: req.server_logical,
            server_physical: req.server_physical,
        }
    } else {
        TransportOptions::Wrapper { client_sap: req.client, server_sap: req.server_logical }
    };
    let mut opts = ClientOptions::new(transport);
    opts.max_receive_pdu = req.max_pdu;
    opts.timeout = req.timeout;
    opts.connect_timeout = req.timeout;
    opts.authentication = match &req.auth {
        Auth::None => Authentication::None,
        Auth::Low { password } => Authentication::Low { password: password.clone() },
        Auth::Gmac { system_title, ek, ak, invocation_counter } => Authentication::Gmac {
            system_title: *system_title,
            encryption_key: *ek,
            authentication_key: *ak,
            invocation_counter: *invocation_counter,
        },
    };
    let addr = format!("{}:{}", req.host, req.port);
    let mut s = Session::connect_tcp(addr.as_str(), &opts).await?;
    let n = s.associate().await?;
    let mut objects = Vec::new();
    for text in &req.objects {
        let attr = match parse_object(text) {
            Ok(a) => a,
            Err(e) => return Err(dlms::Error::InvalidArgument(e)),
        };
        objects.push(read_object(&mut s, attr).await);
    }
    let profile = match &req.profile {
        None => Json::Null,
        Some(p) => {
            let (obis, result) = match p {
                ProfileRead::Range { obis, from, to } => (
                    *obis,
                    s.get_profile_range(*obis, CosemDateTime::from_utc(*from), CosemDateTime::from_utc(*to)).await,
                ),
                ProfileRead::Entries { obis, from, to } => (*obis, s.get_profile_entries(*obis, *from, *to).await),
            };
            let columns = s.get(AttrRef::new(7, obis, 3)).await.map(|v| v.to_json()).unwrap_or(Json::Null);
            match result {
                Ok(v) => json!({"obis": obis.to_string(), "capture_objects": columns, "rows": rows_json(&v)}),
                Err(e) => json!({"obis": obis.to_string(), "error": error_json(&e)}),
            }
        }
    };
    let ic = s.invocation_counter();
    let _ = s.release().await;
    Ok(json!({
        "meter": addr,
        "association": {
            "max_pdu": n.max_pdu,
            "conformance": format!("{:06x}", n.conformance),
            "server_system_title": n.server_system_title.map(hex::encode),
            "invocation_counter_used": ic,
        },
        "objects": objects,
        "profile": profile,
    }))
}

async fn read_object(s: &mut Session, attr: AttrRef) -> Json {
    let base = json!({"class": attr.class_id, "obis": attr.obis.to_string(), "attribute": attr.attribute});
    let mut out = base.as_object().cloned().unwrap_or_default();
    match s.get(attr).await {
        Ok(v) => {
            if let Some(t) = v.as_datetime_utc(&Belgrade) {
                out.insert("utc".into(), json!(t));
            }
            if attr.class_id == 3 && attr.attribute == 2 {
                if let Ok(su) = s.get(AttrRef::new(3, attr.obis, 3)).await {
                    if let Some(su) = ScalerUnit::from_value(&su) {
                        out.insert("scaler".into(), json!(su.scaler));
                        out.insert("unit".into(), json!(su.unit_name().unwrap_or("?")));
                        out.insert("scaled".into(), json!(su.scaled(&v)));
                    }
                }
            }
            out.insert("value".into(), v.to_json());
        }
        Err(e) => {
            out.insert("error".into(), error_json(&e));
        }
    }
    Json::Object(out)
}

fn rows_json(v: &Value) -> Json {
    match v.as_slice() {
        Some(rows) => Json::Array(
            rows.iter()
                .map(|r| match r.as_slice() {
                    Some(cols) => Json::Array(
                        cols.iter()
                            .map(|c| match c.as_datetime_utc(&Belgrade) {
                                Some(t) => json!(t),
                                None => c.to_json(),
                            })
                            .collect(),
                    ),
                    None => r.to_json(),
                })
                .collect(),
        ),
        None => v.to_json(),
    }
}

fn error_json(e: &dlms::Error) -> Json {
    match e {
        dlms::Error::DataAccess(d) | dlms::Error::Action(d) => {
            json!({"data_access_result": d.name(), "code": d.code()})
        }
        other => json!({"error": other.to_string()}),
    }
}

/// `headend dlms decode`: hex in, JSON out.
pub fn decode(hex_text: &str, keys: Option<&dlms::Keys>) -> Result<Json, String> {
    let clean: String = hex_text.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    let bytes = hex::decode(&clean).map_err(|e| format!("not hex: {e}"))?;
    dlms::decode_apdu(&bytes, keys).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_with_guessed_or_given_classes() {
        let a = parse_object("1.0.1.8.0.255").expect("register");
        assert_eq!((a.class_id, a.attribute), (3, 2));
        assert_eq!(parse_object("0.0.1.0.0.255").expect("clock").class_id, 8);
        assert_eq!(parse_object("0.0.96.1.0.255").expect("serial").class_id, 1);
        assert_eq!(parse_object("1-0:99.1.0*255").expect("profile").class_id, 7);
        let b = parse_object("3/1.0.32.7.0.255/3").expect("explicit");
        assert_eq!((b.class_id, b.attribute), (3, 3));
        assert!(parse_object("3/1.0.32.7.0.255").is_err());
        assert!(parse_object("1.0.x.8.0.255").is_err());
    }

    #[test]
    fn decode_reports_bad_hex_and_decodes_a_vector() {
        assert!(decode("zz", None).is_err());
        let v = decode("C001C1000100002B0100FF0200", None).expect("GET request");
        assert!(v.to_string().contains("get"), "{v}");
    }
}
