#![no_main]
//! Fuzz target `image`: see `explainseg::fuzzing::image`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::image(data));
