#![no_main]
//! Fuzz target `safetensors`: see `explainseg::fuzzing::safetensors`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::safetensors(data));
