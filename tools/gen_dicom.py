"""Tiny DICOM fixtures for the CBIS-DDSM reader (tests/dataset.rs).

Writes, with pydicom (version printed below), uncompressed Explicit VR Little Endian files:
  mammo_16bit.dcm  MONOCHROME2, 12 bits stored in 16, 10x8 (rows x cols): value = 40*(r*8+c)
  roi_mask_8bit.dcm MONOCHROME2, 8 bits, 10x8: 255 inside rows 2..6, cols 3..6 (exclusive ends), else 0
  roi_crop_8bit.dcm MONOCHROME2, 8 bits, 4x3: all 100 (the cropped lesion, another size)
  mammo_mono1.dcm  MONOCHROME1, 8 bits, 10x8: value = 3*(r*8+c) (readers invert it)
Expected values are stated here and re-derived by hand in the test.
Run: python tools/gen_dicom.py  (writes tests/fixtures/dataset/)
"""
import os

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dataset")


def write(name, pixels, bits_stored, photometric="MONOCHROME2"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(os.path.join(OUT, name), enforce_file_format=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    idx = np.arange(80).reshape(10, 8)
    write("mammo_16bit.dcm", (40 * idx).astype("<u2"), 12)
    roi = np.zeros((10, 8), np.uint8)
    roi[2:6, 3:6] = 255
    write("roi_mask_8bit.dcm", roi, 8)
    write("roi_crop_8bit.dcm", np.full((4, 3), 100, np.uint8), 8)
    write("mammo_mono1.dcm", (3 * idx).astype(np.uint8), 8, "MONOCHROME1")
    print("pydicom", pydicom.__version__)


if __name__ == "__main__":
    main()
