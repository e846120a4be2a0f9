#![no_main]
//! Fuzz target `dicom`: see `explainseg::fuzzing::dicom`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| explainseg::fuzzing::dicom(data));
