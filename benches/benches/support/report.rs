//! Turns criterion's saved medians into one table of throughput and ratios, so a run's
//! numbers are compared with baselines measured in the same run.

use std::{fmt::Write as _, path::PathBuf};

/// Runs the benchmarks, then prints the table of this run's medians and ratios.
pub(crate) fn run(
    bench: fn(&mut criterion::Criterion),
    group: &str,
    parameters: &[(&str, usize)],
    functions: &[&str],
    ratios: &[(&str, &str)],
) {
    let mut criterion = criterion::Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    println!("\n{}", table(group, parameters, functions, ratios));
}

/// Where criterion saves its results, by criterion's own rules: `$CRITERION_HOME`, else
/// `criterion` in `$CARGO_TARGET_DIR` or in the target directory `cargo metadata` reports (the
/// workspace's, since `cargo bench` runs this from the package's directory), else
/// `target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    cargo_target_directory().map_or_else(
        || PathBuf::from("target/criterion"),
        |target| target.join("criterion"),
    )
}

fn cargo_target_directory() -> Option<PathBuf> {
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(target.into());
    }
    let output = std::process::Command::new(std::env::var_os("CARGO")?)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    metadata["target_directory"].as_str().map(PathBuf::from)
}

/// The median time in nanoseconds of `group/function/parameter`, if it was run.
pub(crate) fn median_ns(group: &str, function: &str, parameter: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(function)
        .join(parameter)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// A table: one row per parameter, for each function its median and throughput, then each
/// ratio `baseline time / subject time` (above 1: the subject is faster).
fn table(
    group: &str,
    parameters: &[(&str, usize)],
    functions: &[&str],
    ratios: &[(&str, &str)],
) -> String {
    let mut out = String::new();
    let _ = write!(out, "| size |");
    for function in functions {
        let _ = write!(out, " {function} median | {function} GB/s |");
    }
    for (subject, baseline) in ratios {
        let _ = write!(out, " {subject} vs {baseline} |");
    }
    let _ = writeln!(out);
    let columns = 1 + functions.len() * 2 + ratios.len();
    let _ = writeln!(out, "{}", "|---".repeat(columns) + "|");
    for (parameter, bytes) in parameters {
        let _ = write!(out, "| {parameter} |");
        for function in functions {
            match median_ns(group, function, parameter) {
                Some(ns) => {
                    let _ = write!(out, " {} | {:.2} |", human(ns), *bytes as f64 / ns);
                }
                None => {
                    let _ = write!(out, " - | - |");
                }
            }
        }
        for (subject, baseline) in ratios {
            match (
                median_ns(group, subject, parameter),
                median_ns(group, baseline, parameter),
            ) {
                (Some(subject), Some(baseline)) => {
                    let _ = write!(out, " {:.3} |", baseline / subject);
                }
                _ => {
                    let _ = write!(out, " - |");
                }
            }
        }
        let _ = writeln!(out);
    }
    out
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
