#![no_main]
//! Fuzz target `capi_params`: see `explainseg::fuzzing::capi_params`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::capi_params(data));
