#![no_main]
//! Fuzz target `npy`: see `explainseg::fuzzing::npy`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::npy(data));
