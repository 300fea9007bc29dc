//! The benchmark's own table and JSON: every timing with tokens/s, GFLOP/s and its share of
//! the machine's matmul peak.

use serde_json::{json, Value};

use crate::timing::Timing;

/// The report: a table and JSON.
pub fn report(timings: &[Timing], peak: f64) -> (String, Value) {
    let mut s = format!("sgemm peak (candle matmul, this machine): {peak:.1} GFLOP/s\n\n{:<34} {:>9} {:>9} {:>9} {:>11} {:>9} {:>7}\n", "operation", "median s", "min s", "max s", "tokens/s", "GFLOP/s", "% peak");
    let mut j = serde_json::Map::new();
    for t in timings {
        let m = t.median();
        let g = t.flops / m / 1e9;
        s.push_str(&format!(
            "{:<34} {:>9.3} {:>9.3} {:>9.3} {:>11.0} {:>9.1} {:>6.0}%\n",
            t.name,
            m,
            t.min(),
            t.max(),
            t.tokens / m,
            g,
            100.0 * g / peak
        ));
        j.insert(t.name.clone(), t.to_json());
    }
    j.insert("sgemm_peak_gflops".into(), json!(peak));
    (s, Value::Object(j))
}
