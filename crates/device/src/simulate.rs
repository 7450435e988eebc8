//! Simulated devices with realistic vitals, for `telesafe device simulate`, the demo
//! clinic's live vitals, and the benchmarks: a pulse oximeter, a blood-pressure cuff, a
//! thermometer, a scale and a glucose meter, each drifting around a baseline the way a
//! person's values do, some of them patients whose values cross the usual thresholds.
//!
//! The jitter comes from a few lines of xorshift: simulated vitals need reproducible
//! variety from a seed, not cryptographic randomness, and a dependency for it would be
//! the only one of its kind in the device SDK.

use telesafe_proto::telemetry::Reading;

/// A kind of device and what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Oximeter,
    Cuff,
    Thermometer,
    Scale,
    Glucometer,
}

impl Kind {
    pub const ALL: [Kind; 5] =
        [Kind::Oximeter, Kind::Cuff, Kind::Thermometer, Kind::Scale, Kind::Glucometer];

    /// The model id the simulator registers for this kind.
    pub fn model_id(self) -> &'static str {
        match self {
            Kind::Oximeter => "sim-oximeter",
            Kind::Cuff => "sim-bp-cuff",
            Kind::Thermometer => "sim-thermometer",
            Kind::Scale => "sim-scale",
            Kind::Glucometer => "sim-glucometer",
        }
    }

    pub fn model_name(self) -> &'static str {
        match self {
            Kind::Oximeter => "PulseOx Home",
            Kind::Cuff => "BP Cuff Home",
            Kind::Thermometer => "Thermo Home",
            Kind::Scale => "Scale Home",
            Kind::Glucometer => "Gluco Home",
        }
    }

    /// (LOINC, UCUM) pairs the model measures.
    pub fn measures(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Oximeter => &[("59408-5", "%"), ("8867-4", "/min")],
            Kind::Cuff => &[("8480-6", "mm[Hg]"), ("8462-4", "mm[Hg]"), ("8867-4", "/min")],
            Kind::Thermometer => &[("8310-5", "Cel")],
            Kind::Scale => &[("29463-7", "kg")],
            Kind::Glucometer => &[("2339-0", "mg/dL")],
        }
    }
}

/// The firmware a simulated device runs when it is up to date, and an old one.
pub const CURRENT_FIRMWARE: &str = "2.4.0";
pub const OLD_FIRMWARE: &str = "1.9.0";
/// The minimum the simulator's models require.
pub const MIN_FIRMWARE: &str = "2.0.0";

/// One simulated person's device: a kind, a baseline per measurement, and state.
#[derive(Debug, Clone)]
pub struct Vitals {
    kind: Kind,
    rng: u64,
    /// Current value per measurement, drifting.
    values: Vec<f64>,
    /// Whether this person's values sit outside the usual thresholds now and then.
    unwell: bool,
}

impl Vitals {
    /// A person for device number `n` (deterministic); every fifth is unwell.
    pub fn new(kind: Kind, n: u64) -> Self {
        let unwell = n % 5 == 4;
        let values = kind.measures().iter().map(|(code, _)| baseline(code, unwell)).collect();
        Self {
            kind,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (n.wrapping_add(1)).wrapping_mul(0xA24B_AED4_963E_E407),
            values,
            unwell,
        }
    }

    fn next(&mut self) -> f64 {
        // xorshift64*, mapped to [-1, 1).
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// One reading of each measurement, taken at `at`.
    pub fn readings(&mut self, at: &str) -> Vec<Reading> {
        let measures = self.kind.measures();
        let mut out = Vec::with_capacity(measures.len());
        for (i, (code, unit)) in measures.iter().enumerate() {
            let base = baseline(code, self.unwell);
            let (step, decimals) = drift(code);
            // A random walk pulled back towards the person's baseline.
            let v = self.values[i] + self.next() * step + (base - self.values[i]) * 0.2;
            self.values[i] = v;
            out.push(Reading {
                at: at.to_owned(),
                code: (*code).to_owned(),
                unit: (*unit).to_owned(),
                value: format_decimal(v, decimals),
            });
        }
        out
    }
}

fn baseline(code: &str, unwell: bool) -> f64 {
    match (code, unwell) {
        ("59408-5", false) => 97.0,
        ("59408-5", true) => 90.5,
        ("8867-4", false) => 72.0,
        ("8867-4", true) => 104.0,
        ("8480-6", false) => 124.0,
        ("8480-6", true) => 172.0,
        ("8462-4", false) => 79.0,
        ("8462-4", true) => 102.0,
        ("8310-5", false) => 36.8,
        ("8310-5", true) => 38.3,
        ("29463-7", _) => 74.0,
        ("2339-0", false) => 105.0,
        ("2339-0", true) => 235.0,
        _ => 0.0,
    }
}

/// How far a value moves between readings, and its decimals.
fn drift(code: &str) -> (f64, usize) {
    match code {
        "59408-5" => (1.2, 0),
        "8867-4" => (4.0, 0),
        "8480-6" => (6.0, 0),
        "8462-4" => (4.0, 0),
        "8310-5" => (0.15, 1),
        "29463-7" => (0.2, 1),
        "2339-0" => (12.0, 0),
        _ => (0.0, 0),
    }
}

/// A decimal string as the protocol wants it: no exponent, no leading zeros, no `-0`.
pub fn format_decimal(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        return format!("{:.decimals$}", 0.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_valid_protocol_values_near_their_baseline() {
        for kind in Kind::ALL {
            for n in 0..10 {
                let mut v = Vitals::new(kind, n);
                for _ in 0..200 {
                    for r in v.readings("2026-11-25T10:00:00Z") {
                        let x: f64 = r.value.parse().unwrap_or(f64::NAN);
                        let base = baseline(&r.code, n % 5 == 4);
                        assert!((x - base).abs() < base * 0.4 + 1.0, "{kind:?} {r:?}");
                        assert!(!r.value.contains('e') && !r.value.starts_with("00"));
                    }
                }
            }
        }
        assert_eq!(format_decimal(-0.01, 1), "0.0");
        assert_eq!(format_decimal(36.849, 1), "36.8");
    }

    #[test]
    fn the_same_device_number_gives_the_same_person() {
        let mut a = Vitals::new(Kind::Cuff, 7);
        let mut b = Vitals::new(Kind::Cuff, 7);
        assert_eq!(a.readings("x"), b.readings("x"));
    }
}
