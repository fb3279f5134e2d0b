"""Medical imaging: DICOM and NIfTI volumes, windowing, patient-level splits, 2-D / 2.5-D slices, MedMNIST.

Needs the `medical` extra (pydicom, nibabel): `pip install 'cnnkit[medical]'`; the modules import them
only when they read a file, and say how to install them if they are missing.

    windowing.py  CT windows (brain, lung, bone, soft-tissue, C,W), the file's own, percentile clipping (MRI)
    dicom.py      DICOM files and series: modality LUT -> HU, window, MONOCHROME1, multi-frame, SEG, errors
    seg.py        DICOM SEG -> a label volume on the grid of its image (series by referenced UID / position, NIfTI)
    nifti.py      NIfTI read (canonical RAS, spacing kept) and write (the input's own orientation and affine)
    volumes.py    Volume; axial slices, 2.5-D stacks and restacking; resampling to a spacing
    studies.py    study layouts (CSV or patient folders) and splits by patient; cross-split patient overlap
    slices.py     studies -> the slice dataset the segment task trains on (cached next to the studies)
    classify.py   DICOM class folders -> windowed PNG folders split by patient (classify task); .dcm at predict
    medmnist.py   MedMNIST's published .npz files on local disk, checksum checked, never downloaded
"""

from cnnkit.data.medical.seg import is_dicom_seg, read_seg_volume
from cnnkit.data.medical.studies import Study, is_study_layout, patient_overlap, patient_split, read_studies
from cnnkit.data.medical.volumes import (Volume, canonical, resample, restack, restore_orientation, stack_slices,
                                         stack_volume, volume_slices)
from cnnkit.data.medical.windowing import PRESETS, Window, apply_window, linear_window, parse_window

__all__ = ["PRESETS", "Study", "Volume", "Window", "apply_window", "canonical", "is_dicom_seg", "is_study_layout",
           "linear_window", "parse_window", "patient_overlap", "patient_split", "read_seg_volume", "read_studies",
           "resample", "restack", "restore_orientation", "stack_slices", "stack_volume", "volume_slices"]
