//! The fleet layout: which meter is where, derived from the seed only.
//!
//! The layout is an infinite deterministic sequence of buildings. Building `b` has 20–150 flats (seeded)
//! and occupies consecutive meter indices: first its master meter, then one meter per flat (apartment 1
//! to n). A fleet of `N` meters is the first `N` indices, so a meter's identity — its building, flat
//! and every attribute — depends only on `(seed, index)`, never on `N`.
//!
//! The last building of a fleet may be cut: some of its flats have no smart meter yet (their indices lie
//! beyond `N`). Its master meter still measures the whole building, flats without a smart meter included.
//!
//! Meter index `i` (0-based) has the serial `SIM{i+1:08}` ([`serial`], [`index_of`]).

use std::net::Ipv4Addr;
use std::ops::Range;

use chrono::NaiveDate;
use schemas::inventory::Region;

use crate::hash::{self, tag};

/// Prefix of every simulated serial.
pub const SERIAL_PREFIX: &str = "SIM";
/// Largest meter index with an 8-digit serial (`SIM99999999`).
pub const MAX_INDEX: usize = 99_999_998;
/// Fewest flats in a building.
pub const MIN_FLATS: u16 = 20;
/// Most flats in a building.
pub const MAX_FLATS: u16 = 150;
/// The tariff code of every simulated household.
pub const TARIFF: &str = "eps-household-2025";
/// How many meters [`Fleet::new`] lays out in advance (lookups beyond are computed on the fly).
pub const DEFAULT_COVER: usize = 250_000;

/// The serial of meter `index` (0-based): `SIM00000001` for index 0.
pub fn serial(index: usize) -> String {
    format!("{SERIAL_PREFIX}{:08}", index.saturating_add(1))
}

/// The index of a simulated serial (`SIM` and exactly 8 digits, not all zero), or `None`.
pub fn index_of(serial: &str) -> Option<usize> {
    let digits = serial.strip_prefix(SERIAL_PREFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = digits.parse().ok()?;
    n.checked_sub(1)
}

/// The loopback address of meter `index`: `127.0.0.0 + index + 2` (index 0 → 127.0.0.2, index 254 →
/// 127.0.1.0), so a protocol server can bind or recognise one address per simulated meter. 127.0.0.1 is
/// never a meter (it is the head-end's and the tests' own address), nor are 127.0.0.0 and 127.255.255.255.
/// Indices beyond the /8 (16,777,213 addresses, never reached by a fleet) wrap around.
pub fn loopback_address(index: usize) -> Ipv4Addr {
    let offset = (index as u64 % LOOPBACK_SPAN) + 2;
    // `offset` <= 2^24 − 2, so the sum stays within 127.0.0.2..=127.255.255.254.
    Ipv4Addr::from(0x7F00_0000u32 | (offset as u32))
}

/// How many distinct meter addresses 127.0.0.0/8 holds (127.0.0.2..=127.255.255.254).
const LOOPBACK_SPAN: u64 = (1 << 24) - 3;

/// How many meters have a loopback address of their own ([`loopback_address`] wraps beyond).
pub const LOOPBACK_METERS: usize = LOOPBACK_SPAN as usize;

/// The meter index whose [`loopback_address`] is `addr` (the smallest one, below 16,777,213), or `None`
/// for an address that is no meter's (outside 127/8, 127.0.0.0, 127.0.0.1, 127.255.255.255).
pub fn index_of_loopback(addr: Ipv4Addr) -> Option<usize> {
    let v = u32::from(addr);
    if v >> 24 != 127 {
        return None;
    }
    let offset = u64::from(v & 0x00FF_FFFF);
    if !(2..=LOOPBACK_SPAN + 1).contains(&offset) {
        return None;
    }
    usize::try_from(offset - 2).ok()
}

/// Where a meter sits in its building.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// The building's master meter (first index of the building).
    Master,
    /// The meter of flat `apartment` (1-based).
    Flat { apartment: u16 },
}

/// A meter's place in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    pub building: usize,
    pub position: Position,
}

/// How the people of a flat use electricity over the day and week (a hidden model trait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Occupancy {
    /// Adults out at work on weekdays, children at school: morning and evening peaks.
    WorkingFamily,
    /// At home all day: late-morning cooking, steady daytime use.
    Retired,
    /// Late risers, evening and night use.
    Student,
    /// One person out all day: small morning peak, evening peak.
    SingleWorker,
    /// Someone working from home: daytime use on weekdays.
    HomeOffice,
}

impl Occupancy {
    pub const ALL: [Occupancy; 5] = [
        Occupancy::WorkingFamily,
        Occupancy::Retired,
        Occupancy::Student,
        Occupancy::SingleWorker,
        Occupancy::HomeOffice,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Occupancy::WorkingFamily => "working_family",
            Occupancy::Retired => "retired",
            Occupancy::Student => "student",
            Occupancy::SingleWorker => "single_worker",
            Occupancy::HomeOffice => "home_office",
        }
    }
}

/// Hidden traits of a flat that drive its consumption (not part of the inventory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traits {
    pub occupancy: Occupancy,
    /// Heated electrically (storage heaters charging at night, direct heaters): ~30 % of flats.
    pub electric_heating: bool,
    /// Rooftop/balcony PV with export: ~5 % of flats.
    pub pv_export: bool,
    /// Air conditioning (summer load).
    pub air_conditioning: bool,
    /// Consumption scale in per mille (700–1300).
    pub scale_permille: u16,
    /// Share of the base load in the night tariff (water heater on a timer), per mille.
    pub night_share_permille: u16,
}

/// One flat (household) and its meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    pub building: usize,
    /// Meter index of the flat's meter.
    pub meter: usize,
    /// 1-based apartment number.
    pub apartment: u16,
    /// Floor area in hundredths of m².
    pub floor_area_centi_m2: u32,
    pub residents: u8,
    /// Approved connection power, decimal text in kW.
    pub approved_power_kw: &'static str,
    pub tariff: &'static str,
    pub traits: Traits,
    pub installed_on: NaiveDate,
}

impl Flat {
    /// Household code `H{i+1:08}` where `i` is the flat's meter index.
    pub fn household_code(&self) -> String {
        format!("H{:08}", self.meter.saturating_add(1))
    }

    pub fn serial(&self) -> String {
        serial(self.meter)
    }

    /// Floor area as decimal text with two decimals, e.g. `54.30`.
    pub fn floor_area_text(&self) -> String {
        format!("{}.{:02}", self.floor_area_centi_m2 / 100, self.floor_area_centi_m2 % 100)
    }
}

/// A municipality with its city and a few real street names.
struct Place {
    municipality: &'static str,
    city: &'static str,
    /// Code used in grid topology names.
    grid: &'static str,
    weight: u32,
    streets: &'static [&'static str],
}

const BELGRADE: &[Place] = &[
    Place {
        municipality: "Novi Beograd",
        city: "Beograd",
        grid: "BG",
        weight: 20,
        streets: &[
            "Bulevar Mihajla Pupina",
            "Jurija Gagarina",
            "Omladinskih brigada",
            "Bulevar Zorana Đinđića",
            "Goce Delčeva",
            "Pariske komune",
        ],
    },
    Place {
        municipality: "Zvezdara",
        city: "Beograd",
        grid: "BG",
        weight: 12,
        streets: &[
            "Bulevar kralja Aleksandra",
            "Vojislava Ilića",
            "Dimitrija Tucovića",
            "Učiteljska",
            "Severni bulevar",
        ],
    },
    Place {
        municipality: "Voždovac",
        city: "Beograd",
        grid: "BG",
        weight: 12,
        streets: &["Vojvode Stepe", "Ustanička", "Bulevar oslobođenja", "Jove Ilića", "Trebevićka"],
    },
    Place {
        municipality: "Vračar",
        city: "Beograd",
        grid: "BG",
        weight: 8,
        streets: &["Njegoševa", "Makenzijeva", "Maksima Gorkog", "Južni bulevar", "Katanićeva", "Kursulina"],
    },
    Place {
        municipality: "Palilula",
        city: "Beograd",
        grid: "BG",
        weight: 12,
        streets: &["Takovska", "Cvijićeva", "Mije Kovačevića", "Ruzveltova", "Bulevar despota Stefana"],
    },
    Place {
        municipality: "Čukarica",
        city: "Beograd",
        grid: "BG",
        weight: 10,
        streets: &["Požeška", "Radnička", "Trgovačka", "Vladimira Radovanovića"],
    },
    Place {
        municipality: "Zemun",
        city: "Beograd",
        grid: "BG",
        weight: 12,
        streets: &["Glavna", "Prvomajska", "Ugrinovačka", "Gornjogradska", "Cara Dušana"],
    },
    Place {
        municipality: "Stari grad",
        city: "Beograd",
        grid: "BG",
        weight: 6,
        streets: &["Cara Dušana", "Gospodar Jevremova", "Dositejeva", "Strahinjića bana"],
    },
    Place {
        municipality: "Savski venac",
        city: "Beograd",
        grid: "BG",
        weight: 4,
        streets: &["Kneza Miloša", "Resavska", "Birčaninova", "Nemanjina"],
    },
    Place {
        municipality: "Rakovica",
        city: "Beograd",
        grid: "BG",
        weight: 6,
        streets: &["Patrijarha Dimitrija", "Vidikovački venac", "Pilota Mihajla Petrovića"],
    },
];

const NOVI_SAD: &[Place] = &[
    Place {
        municipality: "Novi Sad",
        city: "Novi Sad",
        grid: "NS",
        weight: 85,
        streets: &[
            "Bulevar oslobođenja",
            "Zmaj Jovina",
            "Futoška",
            "Bulevar cara Lazara",
            "Narodnog fronta",
            "Jevrejska",
            "Bulevar Evrope",
            "Dunavska",
        ],
    },
    Place {
        municipality: "Petrovaradin",
        city: "Petrovaradin",
        grid: "NS",
        weight: 15,
        streets: &["Preradovićeva", "Beogradska", "Štrosmajerova"],
    },
];

const CENTRAL: &[Place] = &[
    Place {
        municipality: "Kragujevac",
        city: "Kragujevac",
        grid: "KG",
        weight: 45,
        streets: &[
            "Kralja Petra I",
            "Kneza Mihaila",
            "Svetozara Markovića",
            "Kralja Aleksandra I Karađorđevića",
            "Radoja Domanovića",
        ],
    },
    Place {
        municipality: "Niš",
        city: "Niš",
        grid: "NI",
        weight: 55,
        streets: &["Obrenovićeva", "Vožda Karađorđa", "Bulevar Nemanjića", "Generala Milojka Lešjanina", "Episkopska"],
    },
];

fn places(region: Region) -> &'static [Place] {
    match region {
        Region::Belgrade => BELGRADE,
        Region::NoviSad => NOVI_SAD,
        Region::Central => CENTRAL,
    }
}

/// A building, its grid connection and its common areas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Building {
    /// 0-based building number.
    pub index: usize,
    /// Meter index of the master meter; flat `a` (1-based) has meter index `first_meter + a`.
    pub first_meter: usize,
    /// Number of flats (all measured by the master meter, whether they are in the fleet or not).
    pub flats: u16,
    pub region: Region,
    pub municipality: &'static str,
    pub city: &'static str,
    pub street: &'static str,
    pub house_number: u16,
    /// Optional letter after the house number (`12a`).
    pub house_suffix: Option<char>,
    pub floors: u8,
    /// The building has a lift (more than four floors).
    pub lift: bool,
    grid: &'static str,
    feeder_no: u16,
    transformer_no: u16,
    /// Technical losses between the master meter and the flats, in parts per million of the measured sum.
    pub loss_ppm: u32,
    /// When the master meter was installed.
    pub installed_on: NaiveDate,
}

impl Building {
    /// Building code `B{b+1:06}`.
    pub fn code(&self) -> String {
        format!("B{:06}", self.index.saturating_add(1))
    }

    /// Street, number and city, e.g. `Njegoševa 12a, Beograd`.
    pub fn address(&self) -> String {
        match self.house_suffix {
            Some(c) => format!("{} {}{}, {}", self.street, self.house_number, c, self.city),
            None => format!("{} {}, {}", self.street, self.house_number, self.city),
        }
    }

    /// Medium-voltage feeder code.
    pub fn feeder(&self) -> String {
        format!("F-{}-{:02}", self.grid, self.feeder_no)
    }

    /// Distribution transformer (10/0.4 kV substation) code.
    pub fn transformer(&self) -> String {
        format!("TS-{}-{:04}", self.grid, self.transformer_no)
    }

    /// Meter index of the master meter.
    pub const fn master_meter(&self) -> usize {
        self.first_meter
    }

    /// Meter index of flat `apartment` (1-based).
    pub const fn flat_meter(&self, apartment: u16) -> usize {
        self.first_meter + apartment as usize
    }

    /// All meter indices of the building (master first), including flats beyond a fleet's end.
    pub const fn meters(&self) -> Range<usize> {
        self.first_meter..self.first_meter + 1 + self.flats as usize
    }
}

/// The layout of a seed's fleet, with building start offsets precomputed up to a number of meters.
#[derive(Debug, Clone)]
pub struct Fleet {
    seed: u64,
    /// `starts[b]` = meter index of building `b`'s master; the last entry starts beyond the covered range.
    starts: Vec<usize>,
}

/// Number of flats of building `b`.
fn flats_of(seed: u64, b: usize) -> u16 {
    hash::range(hash::hash(&[seed, tag::FLATS, b as u64]), u64::from(MIN_FLATS), u64::from(MAX_FLATS)) as u16
}

fn date_2024_2025(h: u64) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
    base.checked_add_days(chrono::Days::new(h % 731)).unwrap_or(base)
}

impl Fleet {
    /// The layout of `seed`, precomputed for [`DEFAULT_COVER`] meters.
    pub fn new(seed: u64) -> Self {
        Self::covering(seed, DEFAULT_COVER)
    }

    /// The layout of `seed`, precomputed so that lookups of indices below `meters` are O(log B).
    pub fn covering(seed: u64, meters: usize) -> Self {
        let meters = meters.min(MAX_INDEX + 1);
        let mut starts = vec![0usize];
        let mut next = 0usize;
        while next < meters {
            next += 1 + usize::from(flats_of(seed, starts.len() - 1));
            starts.push(next);
        }
        Self { seed, starts }
    }

    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// Meter index of building `b`'s master meter.
    pub fn building_start(&self, b: usize) -> usize {
        if let Some(s) = self.starts.get(b) {
            return *s;
        }
        let last = self.starts.len() - 1;
        let mut s = self.starts[last];
        for k in last..b {
            s = s.saturating_add(1 + usize::from(flats_of(self.seed, k)));
        }
        s
    }

    /// Where meter `index` is, or `None` beyond [`MAX_INDEX`].
    pub fn locate(&self, index: usize) -> Option<Location> {
        if index > MAX_INDEX {
            return None;
        }
        let last = self.starts.len() - 1;
        let (building, start) = if index < self.starts[last] {
            // starts[0] = 0 <= index < starts[last]: the partition point is in 1..=last.
            let b = self.starts.partition_point(|s| *s <= index) - 1;
            (b, self.starts[b])
        } else {
            let (mut b, mut s) = (last, self.starts[last]);
            loop {
                let next = s + 1 + usize::from(flats_of(self.seed, b));
                if index < next {
                    break (b, s);
                }
                b += 1;
                s = next;
            }
        };
        let position = match index - start {
            0 => Position::Master,
            a => Position::Flat { apartment: a as u16 },
        };
        Some(Location { building, position })
    }

    /// Building `b`.
    pub fn building(&self, b: usize) -> Building {
        let seed = self.seed;
        let h = |t: u64| hash::hash(&[seed, t, b as u64]);
        let flats = flats_of(seed, b);
        let region = match h(tag::REGION) % 100 {
            0..55 => Region::Belgrade,
            55..75 => Region::NoviSad,
            _ => Region::Central,
        };
        let list = places(region);
        let weights: Vec<u32> = list.iter().map(|p| p.weight).collect();
        let place = &list[hash::pick(h(tag::MUNICIPALITY), &weights).min(list.len() - 1)];
        let hs = h(tag::STREET);
        let street = place.streets[(hs % place.streets.len() as u64) as usize];
        let hn = h(tag::NUMBER);
        let house_number = hash::range(hn, 1, 160) as u16;
        let house_suffix = match (hn >> 32) % 10 {
            0 => Some('a'),
            1 => Some('b'),
            _ => None,
        };
        let per_floor = hash::range(h(tag::LIFT), 4, 8) as u16;
        let floors = flats.div_ceil(per_floor).clamp(2, 30) as u8;
        let hf = h(tag::FEEDER);
        let ht = h(tag::TRANSFORMER);
        Building {
            index: b,
            first_meter: self.building_start(b),
            flats,
            region,
            municipality: place.municipality,
            city: place.city,
            street,
            house_number,
            house_suffix,
            floors,
            lift: floors > 4,
            grid: place.grid,
            feeder_no: hash::range(hf, 1, 40) as u16,
            transformer_no: hash::range(ht, 1, 1500) as u16,
            loss_ppm: hash::range(h(tag::LOSS), 10_000, 40_000) as u32,
            installed_on: date_2024_2025(h(tag::INSTALLED)),
        }
    }

    /// Flat `apartment` (1-based) of `building`. Apartments beyond the building's flats are clamped.
    pub fn flat(&self, building: &Building, apartment: u16) -> Flat {
        let apartment = apartment.clamp(1, building.flats.max(1));
        let meter = building.flat_meter(apartment);
        let seed = self.seed;
        let h = |t: u64| hash::hash(&[seed, t, meter as u64]);
        let residents = 1 + hash::pick(h(tag::RESIDENTS), &[22, 30, 20, 18, 7, 3]) as u8;
        let occupancy_weights: [u32; 5] = match residents {
            // WorkingFamily, Retired, Student, SingleWorker, HomeOffice
            1 => [0, 35, 20, 35, 10],
            2 => [35, 35, 5, 10, 15],
            _ => [75, 10, 0, 0, 15],
        };
        let occupancy = Occupancy::ALL[hash::pick(h(tag::PATTERN), &occupancy_weights).min(4)];
        let base_area: [u64; 6] = [38, 52, 64, 75, 85, 95];
        let ha = h(tag::AREA);
        let m2 =
            (base_area[usize::from(residents - 1).min(5)] + hash::range(ha, 0, 30)).saturating_sub(12).clamp(25, 119);
        let floor_area_centi_m2 = (m2 * 100 + (ha >> 32) % 100) as u32;
        let electric_heating = hash::chance(h(tag::HEATING), 0.30);
        let pv_export = hash::chance(h(tag::PV), 0.05);
        let air_conditioning = hash::chance(h(tag::AC), 0.55);
        let hp = h(tag::POWER);
        let approved_power_kw = if electric_heating || pv_export {
            ["11.04", "6.90"][hash::pick(hp, &[60, 40])]
        } else {
            ["5.75", "6.90", "11.04"][hash::pick(hp, &[65, 25, 10]).min(2)]
        };
        Flat {
            building: building.index,
            meter,
            apartment,
            floor_area_centi_m2,
            residents,
            approved_power_kw,
            tariff: TARIFF,
            traits: Traits {
                occupancy,
                electric_heating,
                pv_export,
                air_conditioning,
                scale_permille: hash::range(h(tag::SCALE), 700, 1300) as u16,
                night_share_permille: hash::range(h(tag::NT_SHARE), 300, 450) as u16,
            },
            installed_on: date_2024_2025(h(tag::INSTALLED)),
        }
    }

    /// Describes meter `index`, or `None` beyond [`MAX_INDEX`].
    pub fn meter(&self, index: usize) -> Option<MeterInfo> {
        let loc = self.locate(index)?;
        let building = self.building(loc.building);
        let flat = match loc.position {
            Position::Master => None,
            Position::Flat { apartment } => Some(self.flat(&building, apartment)),
        };
        Some(MeterInfo { index, building, flat })
    }

    /// The buildings with at least one meter among the first `meters` indices, in order.
    pub fn buildings(&self, meters: usize) -> impl Iterator<Item = Building> + '_ {
        let count = match meters.checked_sub(1).and_then(|last| self.locate(last)) {
            Some(loc) => loc.building + 1,
            None => 0,
        };
        (0..count).map(move |b| self.building(b))
    }
}

/// A meter with its building and, for household meters, its flat.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterInfo {
    pub index: usize,
    pub building: Building,
    /// `None` for the building's master meter.
    pub flat: Option<Flat>,
}

impl MeterInfo {
    pub fn serial(&self) -> String {
        serial(self.index)
    }

    pub const fn is_master(&self) -> bool {
        self.flat.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_round_trip() {
        assert_eq!(serial(0), "SIM00000001");
        assert_eq!(serial(204_999), "SIM00205000");
        for i in [0usize, 1, 99, 204_999, MAX_INDEX] {
            assert_eq!(index_of(&serial(i)), Some(i));
        }
        for bad in ["", "SIM", "SIM00000000", "SIM0000001", "SIM000000001", "sim00000001", "SIM0000000x", "UNK00000001"]
        {
            assert_eq!(index_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_addresses_are_distinct_and_local() {
        assert_eq!(loopback_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_address(253), Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(loopback_address(254), Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(loopback_address(204_999), Ipv4Addr::new(127, 3, 32, 201));
        assert_eq!(loopback_address((1 << 24) - 4), Ipv4Addr::new(127, 255, 255, 254));
        assert_eq!(loopback_address((1 << 24) - 3), Ipv4Addr::new(127, 0, 0, 2));
        for i in [0, 1, 253, 254, 204_999, (1 << 24) - 4] {
            assert_eq!(index_of_loopback(loopback_address(i)), Some(i));
        }
        for a in [[127, 0, 0, 0], [127, 0, 0, 1], [127, 255, 255, 255], [10, 0, 0, 2]] {
            assert_eq!(index_of_loopback(Ipv4Addr::from(a)), None);
        }
        assert!(loopback_address(usize::MAX).is_loopback());
    }

    #[test]
    fn layout_depends_on_the_seed_only() {
        let small = Fleet::covering(7, 10);
        let big = Fleet::covering(7, 300_000);
        for i in (0..300_000).step_by(997) {
            assert_eq!(small.locate(i), big.locate(i), "index {i}");
            assert_eq!(small.meter(i), big.meter(i));
        }
        assert_ne!(Fleet::new(8).building(0), Fleet::new(7).building(0));
    }

    #[test]
    fn buildings_are_contiguous() {
        let f = Fleet::covering(3, 20_000);
        let mut next = 0;
        for b in f.buildings(20_000) {
            assert_eq!(b.first_meter, next);
            assert!((MIN_FLATS..=MAX_FLATS).contains(&b.flats));
            assert_eq!(f.locate(b.first_meter).map(|l| l.position), Some(Position::Master));
            let last = b.meters().end - 1;
            assert_eq!(
                f.locate(last),
                Some(Location { building: b.index, position: Position::Flat { apartment: b.flats } })
            );
            next = b.meters().end;
        }
        assert!(next >= 20_000 && next - 20_000 <= usize::from(MAX_FLATS));
        assert_eq!(f.buildings(0).count(), 0);
        assert_eq!(f.locate(MAX_INDEX + 1), None);
        assert!(f.locate(MAX_INDEX).is_some());
    }

    #[test]
    fn attributes_are_plausible() {
        let f = Fleet::new(1);
        let mut regions = [0usize; 3];
        let (mut heating, mut pv, mut flats) = (0, 0, 0);
        for b in f.buildings(200_000) {
            regions[Region::ALL.iter().position(|r| *r == b.region).unwrap_or(0)] += 1;
            assert!(b.code().starts_with('B') && b.code().len() == 7);
            assert!((10_000..=40_000).contains(&b.loss_ppm));
            for a in 1..=b.flats {
                let flat = f.flat(&b, a);
                flats += 1;
                assert!((2500..12_000).contains(&flat.floor_area_centi_m2));
                assert!((1..=6).contains(&flat.residents));
                heating += usize::from(flat.traits.electric_heating);
                pv += usize::from(flat.traits.pv_export);
                assert_eq!(flat.floor_area_text().split('.').nth(1).map(str::len), Some(2));
            }
        }
        let total: usize = regions.iter().sum();
        assert!((50..60).contains(&(regions[0] * 100 / total)), "{regions:?}");
        assert!((15..25).contains(&(regions[1] * 100 / total)), "{regions:?}");
        assert!((25..35).contains(&(heating * 100 / flats)), "{heating}/{flats}");
        assert!((3..8).contains(&(pv * 100 / flats)), "{pv}/{flats}");
    }
}
