//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and the regression inputs
//! (`fuzz/regressions/<target>/`, every crash the fuzzers found) through the
//! fuzz targets' entry points: none may panic. This is the few-seconds fuzz
//! smoke that CI runs; `tools/fuzz.sh` runs the real fuzzers.

use std::path::Path;

#[test]
fn corpora_and_regressions_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for target in explainseg::fuzzing::TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                assert!(kind == "regressions", "no corpus for {target}");
                continue;
            };
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for p in files {
                let Ok(data) = std::fs::read(&p) else {
                    continue; // removed meanwhile (a running fuzzer reduces its corpus)
                };
                let started = std::time::Instant::now();
                let r = std::panic::catch_unwind(|| explainseg::fuzzing::run(target, &data));
                assert!(r.is_ok(), "{target}: {} panicked", p.display());
                // Slow units and timeouts found by the fuzzers must stay fast.
                let secs = started.elapsed().as_secs_f64();
                assert!(secs < 3.0, "{target}: {} took {secs:.1} s", p.display());
                // Truncations and single-byte flips of every seed as well.
                for cut in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
                    let r =
                        std::panic::catch_unwind(|| explainseg::fuzzing::run(target, &data[..cut]));
                    assert!(r.is_ok(), "{target}: {} cut at {cut} panicked", p.display());
                }
                for i in (0..data.len()).step_by(data.len() / 16 + 1) {
                    let mut d = data.clone();
                    d[i] ^= 0xA5;
                    let r = std::panic::catch_unwind(|| explainseg::fuzzing::run(target, &d));
                    assert!(
                        r.is_ok(),
                        "{target}: {} flipped at {i} panicked",
                        p.display()
                    );
                }
                count += 1;
            }
        }
    }
    assert!(count >= 20, "only {count} seeds");
}
