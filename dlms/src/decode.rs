//! `decode_apdu`: any APDU, wrapper PDU or HDLC frame to JSON.

use std::fmt;

use serde_json::{json, Map, Value as Json};

use dlms_cosem_rs::axdr::Data;
use dlms_cosem_rs::codec::Decode;
use dlms_cosem_rs::security::{
    KeyRing, KeySet, Protector, RustCryptoProvider, SecurityPolicy, SecuritySuite, SystemTitle,
};
use dlms_cosem_rs::xdlms::{
    ActionRequest, ActionResponse, ActionResponseWithOptionalData, AttributeDescriptor,
    AttributeDescriptorWithSelection, CipheredService, Conformance, GetDataResult, GetRequest, GetResponse,
    MethodDescriptor, Protection, SelectiveAccess, SetRequest, SetResponse,
};
use dlms_cosem_rs::{Apdu, Obis as EngineObis};

use crate::error::{DataAccessError, DecodeError};
use crate::transport::{HdlcControl, HdlcFrame, LLC_REQUEST, LLC_RESPONSE};
use crate::value::{CosemDateTime, Value};

/// Keys for deciphering `glo-`/`ded-`/`general-glo` APDUs. `Debug` never prints them.
#[derive(Clone)]
pub struct Keys {
    /// Block cipher key (EK, global unicast encryption key), 16 bytes.
    pub encryption_key: [u8; 16],
    /// Authentication key (AK), 16 bytes.
    pub authentication_key: [u8; 16],
    /// The *sender's* system title, for `glo-`/`ded-` APDUs that do not carry one
    /// (the meter's for responses and pushes, the client's for requests).
    pub system_title: Option<[u8; 8]>,
}

impl Keys {
    /// From hex strings (as given on a command line): EK and AK 32 hex digits each,
    /// system title 16 hex digits.
    ///
    /// # Errors
    /// [`DecodeError::Hex`] when a value is not hex of the right length.
    pub fn from_hex(
        encryption_key: &str,
        authentication_key: &str,
        system_title: Option<&str>,
    ) -> Result<Self, DecodeError> {
        fn arr<const N: usize>(what: &str, s: &str) -> Result<[u8; N], DecodeError> {
            let v = hex::decode(s.trim()).map_err(|e| DecodeError::Hex(format!("{what}: {e}")))?;
            <[u8; N]>::try_from(v.as_slice()).map_err(|_| DecodeError::Hex(format!("{what}: expected {N} bytes")))
        }
        Ok(Self {
            encryption_key: arr("encryption key", encryption_key)?,
            authentication_key: arr("authentication key", authentication_key)?,
            system_title: system_title.map(|t| arr("system title", t)).transpose()?,
        })
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("encryption_key", &"<redacted>")
            .field("authentication_key", &"<redacted>")
            .field("system_title", &self.system_title.map(hex::encode))
            .finish()
    }
}

/// Decode a hex string (whitespace and `:` ignored) with [`decode_apdu`].
///
/// # Errors
/// Invalid hex, or as [`decode_apdu`].
pub fn decode_hex(hex_str: &str, keys: Option<&Keys>) -> Result<Json, DecodeError> {
    let clean: String = hex_str.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    let bytes = hex::decode(clean).map_err(|e| DecodeError::Hex(e.to_string()))?;
    decode_apdu(&bytes, keys)
}

/// Decode any APDU to JSON. A whole wrapper PDU (`00 01 …`) or HDLC frame (`7E …`) is
/// unwrapped first (its header is reported under `wrapper` / `hdlc`). Ciphered APDUs are
/// deciphered when `keys` are given (and a system title, for `glo-`/`ded-`), and the
/// inner APDU is decoded under `deciphered`.
///
/// # Errors
/// When the input is empty, the framing is broken or the APDU is malformed. Never panics.
pub fn decode_apdu(bytes: &[u8], keys: Option<&Keys>) -> Result<Json, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.first() == Some(&0x7E) {
        let (frame, used) = HdlcFrame::decode(bytes).map_err(|e| DecodeError::Framing(e.to_string()))?;
        let mut hdlc = json!({
            "segmented": frame.segmented,
            "destination": format!("{:?}", frame.destination),
            "source": format!("{:?}", frame.source),
            "control": format!("{:?}", frame.control),
            "frame_length": used,
        });
        let info = &frame.information[..];
        let apdu = info.strip_prefix(&LLC_REQUEST[..]).or_else(|| info.strip_prefix(&LLC_RESPONSE[..]));
        let mut out = Map::new();
        match (frame.control, apdu) {
            (HdlcControl::Snrm | HdlcControl::Ua, _) if !info.is_empty() => {
                if let Ok(p) = dlms_cosem_rs::transport::hdlc::Parameters::decode(info) {
                    if let Some(o) = hdlc.as_object_mut() {
                        o.insert(
                            "parameters".into(),
                            json!({"max_info_tx": p.max_info_tx, "max_info_rx": p.max_info_rx,
                                   "window_tx": p.window_tx, "window_rx": p.window_rx}),
                        );
                    }
                }
            }
            (HdlcControl::I { .. }, Some(apdu)) if !frame.segmented && !apdu.is_empty() => {
                out.insert("apdu".into(), decode_plain(apdu, keys, 0)?);
            }
            (_, _) if !info.is_empty() => {
                if let Some(o) = hdlc.as_object_mut() {
                    o.insert("information".into(), json!(hex::encode(info)));
                }
            }
            _ => {}
        }
        out.insert("hdlc".into(), hdlc);
        return Ok(Json::Object(out));
    }
    if let [0x00, 0x01, s0, s1, d0, d1, l0, l1, rest @ ..] = bytes {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        if len == rest.len() {
            let mut out = Map::new();
            out.insert(
                "wrapper".into(),
                json!({"source": u16::from_be_bytes([*s0, *s1]), "destination": u16::from_be_bytes([*d0, *d1]), "length": len}),
            );
            out.insert("apdu".into(), decode_plain(rest, keys, 0)?);
            return Ok(Json::Object(out));
        }
    }
    decode_plain(bytes, keys, 0)
}

fn err(e: impl fmt::Display) -> DecodeError {
    DecodeError::Apdu(e.to_string())
}

fn obis(o: EngineObis) -> String {
    let [a, b, c, d, e, f] = o.0;
    format!("{a}.{b}.{c}.{d}.{e}.{f}")
}

fn data_json(d: &Data<'_>) -> Result<Json, DecodeError> {
    Ok(Value::from_data(d).map_err(err)?.to_json())
}

fn attr_json(a: &AttributeDescriptor) -> Json {
    json!({"class": a.class_id, "obis": obis(a.instance_id), "attribute": a.attribute_id})
}

fn method_json(m: &MethodDescriptor) -> Json {
    json!({"class": m.class_id, "obis": obis(m.instance_id), "method": m.method_id})
}

fn access_json(a: &Option<SelectiveAccess<'_>>) -> Result<Json, DecodeError> {
    Ok(match a {
        None => Json::Null,
        Some(sa) => json!({"selector": sa.selector, "parameters": data_json(&sa.parameters)?}),
    })
}

fn with_sel_json(a: &AttributeDescriptorWithSelection<'_>) -> Result<Json, DecodeError> {
    let mut v = attr_json(&a.descriptor);
    if let Some(o) = v.as_object_mut() {
        o.insert("access".into(), access_json(&a.access)?);
    }
    Ok(v)
}

fn result_name(code: u8) -> Json {
    match DataAccessError::from_code(code) {
        None => json!("success"),
        Some(e) => json!(e.to_string()),
    }
}

fn get_result_json(r: &GetDataResult<'_>) -> Result<Json, DecodeError> {
    Ok(match r {
        GetDataResult::Data(d) => json!({"data": data_json(d)?}),
        GetDataResult::Error(e) => json!({"error": result_name(e.as_u8()), "code": e.as_u8()}),
    })
}

fn action_resp_json(r: &ActionResponseWithOptionalData<'_>) -> Result<Json, DecodeError> {
    Ok(json!({
        "result": result_name(r.result.as_u8()),
        "code": r.result.as_u8(),
        "return": match &r.return_parameters { Some(p) => get_result_json(p)?, None => Json::Null },
    }))
}

fn block_raw(last: bool, number: u32, raw: &[u8]) -> Json {
    json!({"last_block": last, "block_number": number, "raw": hex::encode(raw)})
}

fn conformance_json(c: Conformance) -> Json {
    let names: Vec<String> = c.iter_names().map(|(n, _)| n.to_ascii_lowercase().replace('_', "-")).collect();
    json!({"hex": hex::encode(c.to_bytes()), "names": names})
}

fn list<T, F>(items: impl Iterator<Item = dlms_cosem_rs::Result<T>>, f: F) -> Result<Json, DecodeError>
where
    F: Fn(&T) -> Result<Json, DecodeError>,
{
    let mut out = Vec::new();
    for i in items {
        out.push(f(&i.map_err(err)?)?);
    }
    Ok(Json::Array(out))
}

const MAX_NESTING: u8 = 4;

fn decode_plain(bytes: &[u8], keys: Option<&Keys>, depth: u8) -> Result<Json, DecodeError> {
    if depth > MAX_NESTING {
        return Err(DecodeError::Apdu("ciphered APDUs nested too deeply".into()));
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let apdu = Apdu::from_bytes(bytes).map_err(err)?;
    apdu_json(&apdu, keys, depth)
}

fn nested(info: Option<&[u8]>, keys: Option<&Keys>, depth: u8) -> Json {
    match info {
        None => Json::Null,
        Some(b) => match decode_plain(b, keys, depth + 1) {
            Ok(j) => j,
            Err(e) => json!({"raw": hex::encode(b), "error": e.to_string()}),
        },
    }
}

#[allow(clippy::too_many_lines)]
fn apdu_json(apdu: &Apdu<'_>, keys: Option<&Keys>, depth: u8) -> Result<Json, DecodeError> {
    let invoke = |i: dlms_cosem_rs::xdlms::InvokeId| json!({"id": i.id(), "confirmed": i.is_confirmed(), "high_priority": i.is_high_priority(), "raw": i.0});
    Ok(match apdu {
        Apdu::Aarq(a) => json!({
            "type": "aarq",
            "application_context": a.application_context.map(|c| format!("{c:?}")),
            "calling_ap_title": a.calling_ap_title.map(hex::encode),
            "sender_acse_requirements": a.sender_acse_requirements,
            "mechanism": a.mechanism_name.map(|m| format!("{m:?}")),
            "calling_authentication_value": a.calling_authentication_value.map(hex::encode),
            "user_information": nested(a.user_information, keys, depth),
        }),
        Apdu::Aare(a) => json!({
            "type": "aare",
            "application_context": a.application_context.map(|c| format!("{c:?}")),
            "result": format!("{:?}", a.result),
            "diagnostic": format!("{:?}", a.diagnostic),
            "responding_ap_title": a.responding_ap_title.map(hex::encode),
            "mechanism": a.mechanism_name.map(|m| format!("{m:?}")),
            "responding_authentication_value": a.responding_authentication_value.map(hex::encode),
            "user_information": nested(a.user_information, keys, depth),
        }),
        Apdu::Rlrq(r) => json!({"type": "rlrq", "reason": r.reason.map(|x| format!("{x:?}")),
            "user_information": nested(r.user_information, keys, depth)}),
        Apdu::Rlre(r) => json!({"type": "rlre", "reason": r.reason.map(|x| format!("{x:?}")),
            "user_information": nested(r.user_information, keys, depth)}),
        Apdu::InitiateRequest(i) => json!({
            "type": "initiate-request",
            "dedicated_key_present": i.dedicated_key.is_some(),
            "response_allowed": i.response_allowed,
            "dlms_version": i.proposed_dlms_version,
            "conformance": conformance_json(i.proposed_conformance),
            "max_receive_pdu": i.client_max_receive_pdu_size,
        }),
        Apdu::InitiateResponse(i) => json!({
            "type": "initiate-response",
            "dlms_version": i.negotiated_dlms_version,
            "conformance": conformance_json(i.negotiated_conformance),
            "max_receive_pdu": i.server_max_receive_pdu_size,
            "vaa_name": i.vaa_name,
        }),
        Apdu::GetRequest(g) => match g {
            GetRequest::Normal { invoke_id, descriptor, access } => json!({"type": "get-request-normal",
                "invoke_id": invoke(*invoke_id), "attribute": attr_json(descriptor), "access": access_json(access)?}),
            GetRequest::Next { invoke_id, block_number } => json!({"type": "get-request-next",
                "invoke_id": invoke(*invoke_id), "block_number": block_number}),
            GetRequest::WithList { invoke_id, list: l } => json!({"type": "get-request-with-list",
                "invoke_id": invoke(*invoke_id), "attributes": list(l.iter(), with_sel_json)?}),
        },
        Apdu::GetResponse(g) => match g {
            GetResponse::Normal { invoke_id, result } => json!({"type": "get-response-normal",
                "invoke_id": invoke(*invoke_id), "result": get_result_json(result)?}),
            GetResponse::WithDataBlock { invoke_id, block } => {
                let mut v = json!({"type": "get-response-with-datablock", "invoke_id": invoke(*invoke_id),
                    "last_block": block.last_block, "block_number": block.block_number});
                if let Some(o) = v.as_object_mut() {
                    match block.result {
                        Ok(raw) => o.insert("raw".into(), json!(hex::encode(raw))),
                        Err(e) => o.insert("error".into(), result_name(e.as_u8())),
                    };
                }
                v
            }
            GetResponse::WithList { invoke_id, results } => json!({"type": "get-response-with-list",
                "invoke_id": invoke(*invoke_id), "results": list(results.iter(), get_result_json)?}),
        },
        Apdu::SetRequest(s) => match s {
            SetRequest::Normal { invoke_id, descriptor, access, value } => json!({"type": "set-request-normal",
                "invoke_id": invoke(*invoke_id), "attribute": attr_json(descriptor), "access": access_json(access)?,
                "value": data_json(value)?}),
            SetRequest::WithFirstDataBlock { invoke_id, descriptor, access, block } => json!({
                "type": "set-request-with-first-datablock", "invoke_id": invoke(*invoke_id),
                "attribute": attr_json(descriptor), "access": access_json(access)?,
                "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
            SetRequest::WithDataBlock { invoke_id, block } => json!({"type": "set-request-with-datablock",
                "invoke_id": invoke(*invoke_id), "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
            SetRequest::WithList { invoke_id, descriptors, values } => json!({"type": "set-request-with-list",
                "invoke_id": invoke(*invoke_id), "attributes": list(descriptors.iter(), with_sel_json)?,
                "values": list(values.iter(), |d| data_json(d))?}),
            SetRequest::WithListAndFirstDataBlock { invoke_id, descriptors, block } => json!({
                "type": "set-request-with-list-and-first-datablock", "invoke_id": invoke(*invoke_id),
                "attributes": list(descriptors.iter(), with_sel_json)?,
                "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
        },
        Apdu::SetResponse(s) => match s {
            SetResponse::Normal { invoke_id, result } => json!({"type": "set-response-normal",
                "invoke_id": invoke(*invoke_id), "result": result_name(result.as_u8())}),
            SetResponse::DataBlock { invoke_id, block_number } => json!({"type": "set-response-datablock",
                "invoke_id": invoke(*invoke_id), "block_number": block_number}),
            SetResponse::LastDataBlock { invoke_id, result, block_number } => {
                json!({"type": "set-response-last-datablock",
                "invoke_id": invoke(*invoke_id), "result": result_name(result.as_u8()), "block_number": block_number})
            }
            SetResponse::LastDataBlockWithList { invoke_id, results, block_number } => json!({
                "type": "set-response-last-datablock-with-list", "invoke_id": invoke(*invoke_id),
                "results": list(results.iter(), |r| Ok(result_name(r.as_u8())))?, "block_number": block_number}),
            SetResponse::WithList { invoke_id, results } => json!({"type": "set-response-with-list",
                "invoke_id": invoke(*invoke_id), "results": list(results.iter(), |r| Ok(result_name(r.as_u8())))?}),
        },
        Apdu::ActionRequest(a) => match a {
            ActionRequest::Normal { invoke_id, descriptor, parameters } => json!({"type": "action-request-normal",
                "invoke_id": invoke(*invoke_id), "method": method_json(descriptor),
                "parameters": match parameters { Some(p) => data_json(p)?, None => Json::Null }}),
            ActionRequest::NextPblock { invoke_id, block_number } => json!({"type": "action-request-next-pblock",
                "invoke_id": invoke(*invoke_id), "block_number": block_number}),
            ActionRequest::WithList { invoke_id, descriptors, parameters } => {
                json!({"type": "action-request-with-list",
                "invoke_id": invoke(*invoke_id), "methods": list(descriptors.iter(), |m| Ok(method_json(m)))?,
                "parameters": list(parameters.iter(), |d| data_json(d))?})
            }
            ActionRequest::WithFirstPblock { invoke_id, descriptor, block } => json!({
                "type": "action-request-with-first-pblock", "invoke_id": invoke(*invoke_id),
                "method": method_json(descriptor), "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
            ActionRequest::WithListAndFirstPblock { invoke_id, descriptors, block } => json!({
                "type": "action-request-with-list-and-first-pblock", "invoke_id": invoke(*invoke_id),
                "methods": list(descriptors.iter(), |m| Ok(method_json(m)))?,
                "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
            ActionRequest::WithPblock { invoke_id, block } => json!({"type": "action-request-with-pblock",
                "invoke_id": invoke(*invoke_id), "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
        },
        Apdu::ActionResponse(a) => match a {
            ActionResponse::Normal { invoke_id, response } => json!({"type": "action-response-normal",
                "invoke_id": invoke(*invoke_id), "response": action_resp_json(response)?}),
            ActionResponse::WithPblock { invoke_id, block } => json!({"type": "action-response-with-pblock",
                "invoke_id": invoke(*invoke_id), "block": block_raw(block.last_block, block.block_number, block.raw_data)}),
            ActionResponse::WithList { invoke_id, responses } => json!({"type": "action-response-with-list",
                "invoke_id": invoke(*invoke_id), "responses": list(responses.iter(), action_resp_json)?}),
            ActionResponse::NextPblock { invoke_id, block_number } => json!({"type": "action-response-next-pblock",
                "invoke_id": invoke(*invoke_id), "block_number": block_number}),
        },
        Apdu::DataNotification(n) => json!({
            "type": "data-notification",
            "long_invoke_id": n.long_invoke_id.id(),
            "long_invoke_id_raw": n.long_invoke_id.0,
            "date_time": n.date_time.0.map(|d| CosemDateTime::from_bytes(d.to_bytes()).to_json()),
            "body": data_json(&n.body)?,
        }),
        Apdu::EventNotification(n) => json!({
            "type": "event-notification",
            "time": n.time.map(|d| CosemDateTime::from_bytes(d.to_bytes()).to_json()),
            "attribute": attr_json(&n.descriptor),
            "value": data_json(&n.value)?,
        }),
        Apdu::ExceptionResponse(e) => json!({
            "type": "exception-response",
            "state_error": e.state_error.as_u8(),
            "state_error_name": format!("{:?}", e.state_error),
            "service_error": e.service_error.as_u8(),
            "service_error_name": format!("{:?}", e.service_error),
            "expected_invocation_counter": e.expected_invocation_counter,
        }),
        Apdu::ConfirmedServiceError(e) => json!({
            "type": "confirmed-service-error", "service": e.service, "error_class": e.error_class, "error_code": e.error_code,
        }),
        Apdu::Ciphered { protection, service, body } => {
            let title = keys.and_then(|k| k.system_title);
            ciphered_json(&format!("{protection:?}"), &format!("{service:?}"), *protection, body, title, keys, depth)?
        }
        Apdu::GeneralCiphered { protection, body } => {
            let title = <[u8; 8]>::try_from(body.system_title).ok();
            let mut v = ciphered_json(
                &format!("{protection:?}"),
                "general-glo-ciphering",
                *protection,
                &body.ciphered,
                title,
                keys,
                depth,
            )?;
            if let Some(o) = v.as_object_mut() {
                o.insert("system_title".into(), json!(hex::encode(body.system_title)));
            }
            v
        }
        other => json!({"type": format!("{:?}", other.tag()), "debug": format!("{other:?}")}),
    })
}

fn ciphered_json(
    protection_name: &str,
    service: &str,
    protection: Protection,
    body: &CipheredService<'_>,
    title: Option<[u8; 8]>,
    keys: Option<&Keys>,
    depth: u8,
) -> Result<Json, DecodeError> {
    let sc = body.security_control;
    let mut v = json!({
        "type": "ciphered",
        "protection": protection_name,
        "service": service,
        "security_control": sc.0,
        "suite": sc.suite(),
        "authenticated": sc.authenticated(),
        "encrypted": sc.encrypted(),
        "invocation_counter": body.invocation_counter,
        "payload_length": body.payload.len(),
    });
    if let (Some(k), Some(t)) = (keys, title) {
        let inner = match decipher(body, protection, t, k) {
            Ok(plain) => match decode_plain(&plain, keys, depth + 1) {
                Ok(j) => j,
                Err(e) => json!({"plaintext": hex::encode(&plain), "error": e.to_string()}),
            },
            Err(e) => json!({"error": e.to_string()}),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("deciphered".into(), inner);
        }
    }
    Ok(v)
}

/// Decipher one ciphered service body with suite-0 keys.
pub(crate) fn decipher(
    body: &CipheredService<'_>,
    protection: Protection,
    title: [u8; 8],
    keys: &Keys,
) -> Result<Vec<u8>, DecodeError> {
    let sc = body.security_control;
    let suite = SecuritySuite::from_id(sc.suite()).map_err(|e| DecodeError::Decipher(e.to_string()))?;
    let mut ring = KeyRing::new(keys.encryption_key, keys.authentication_key);
    let key_set = if protection == Protection::Dedicated {
        ring.set_dedicated(dlms_cosem_rs::security::Key::new(keys.encryption_key));
        KeySet::Dedicated
    } else if sc.broadcast_key() {
        ring.gbek = Some(dlms_cosem_rs::security::Key::new(keys.encryption_key));
        KeySet::GlobalBroadcast
    } else {
        KeySet::GlobalUnicast
    };
    let policy = SecurityPolicy { suite, authenticated: sc.authenticated(), encrypted: sc.encrypted(), key_set };
    let protector = Protector::new(RustCryptoProvider::new(ring), policy);
    let mut payload = body.payload.to_vec();
    let plain = protector
        .unprotect_as(
            policy,
            sc,
            &SystemTitle::new(title),
            body.invocation_counter,
            &keys.authentication_key,
            &mut payload,
        )
        .map_err(|e| DecodeError::Decipher(e.to_string()))?;
    Ok(plain.to_vec())
}
