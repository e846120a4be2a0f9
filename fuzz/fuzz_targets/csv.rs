#![no_main]
//! Fuzz target `csv`: see `explainseg::fuzzing::csv`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::csv(data));
