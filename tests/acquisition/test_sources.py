"""Array/video/simulated/camera sources, open_source dispatch and the crop/bin transforms."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acquisition.sources import (
    HDF5Source,
    NpySource,
    TiffSource,
    VideoSource,
    open_source,
)
from acquisition.sources.camera import CameraSource
from acquisition.sources.simulated import SimulatedSource
from acquisition.transforms import FrameTransform, parse_crop
from online_cnmfe.errors import SourceError
from tests.acquisition.test_sources_miniscope import write_avi


def _stack(src) -> np.ndarray:
    return np.stack([f.pixels for f in src])


@pytest.fixture
def movie(rng) -> np.ndarray:
    return rng.integers(0, 4000, (11, 9, 13), dtype=np.uint16)


# ---------------------------------------------------------------- transforms
def _bin_reference(frame: np.ndarray, b: int) -> np.ndarray:
    """Obvious loop version: mean of each full block, rounded half up (ints)."""
    h, w = frame.shape[0] // b, frame.shape[1] // b
    out = np.zeros((h, w), dtype=frame.dtype)
    for r in range(h):
        for c in range(w):
            block = frame[r * b : (r + 1) * b, c * b : (c + 1) * b]
            if np.issubdtype(frame.dtype, np.floating):
                out[r, c] = block.astype(np.float64).mean()
            else:
                out[r, c] = int(np.floor(block.astype(np.float64).mean() + 0.5))
    return out


@settings(max_examples=60, deadline=None)
@given(
    frame=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int16]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=4, max_side=17),
        elements={"allow_nan": False, "allow_infinity": False},
    ),
    b=st.sampled_from([1, 2, 3, 4]),
)
def test_binning_matches_reference(frame, b):
    transform = FrameTransform(bin=b)
    out = transform.apply(frame)
    assert out.dtype == frame.dtype
    assert out.shape == transform.output_shape(frame.shape)
    np.testing.assert_allclose(out, _bin_reference(frame, b), rtol=1e-6)


def test_crop_then_bin_and_errors():
    frame = np.arange(100, dtype=np.uint8).reshape(10, 10)
    t = FrameTransform(crop=(1, 2, 6, 7), bin=3)
    assert t.output_shape((10, 10)) == (2, 2)
    np.testing.assert_array_equal(t.apply(frame), _bin_reference(frame[1:7, 2:9], 3))
    with pytest.raises(ValueError, match="does not fit"):
        t.output_shape((5, 10))
    with pytest.raises(ValueError, match="bin"):
        FrameTransform(bin=5)
    with pytest.raises(ValueError, match="empty"):
        FrameTransform(bin=4).output_shape((3, 10))
    assert parse_crop("1, 2,3,4") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,4", "-1,0,3,4"):
        with pytest.raises(ValueError, match="crop"):
            parse_crop(bad)


# ---------------------------------------------------------------- array sources
def test_tiff_single_file_and_folder(tmp_path, movie):
    tifffile.imwrite(tmp_path / "m.tif", movie, photometric="minisblack")
    src = open_source(tmp_path / "m.tif", frame_rate_hz=10.0)
    assert isinstance(src, TiffSource)
    assert (src.info.shape, src.info.dtype, src.info.n_frames) == ((9, 13), "uint16", 11)
    frames = list(src)
    np.testing.assert_array_equal(_stack(frames), movie)
    assert [f.t_acq_ms for f in frames[:3]] == [0.0, 100.0, 200.0]
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, part in (("p10.tif", movie[8:]), ("p2.tif", movie[3:8]), ("p1.tif", movie[:3])):
        tifffile.imwrite(
            folder / name, part, photometric="minisblack"
        )  # natural order: p1, p2, p10
    src = open_source(folder)
    assert src.info.n_frames == 11 and src.info.metadata["frame_rate_assumed"]
    np.testing.assert_array_equal(_stack(src), movie)
    np.testing.assert_array_equal(_stack(src.frames(2, 9)), movie[2:9])


def test_tiff_imagej_hyperstack_and_rate(tmp_path, movie):
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True, metadata={"finterval": 0.2})
    src = open_source(tmp_path / "ij.tif")
    assert src.info.frame_rate_hz == pytest.approx(5.0)
    np.testing.assert_array_equal(_stack(src.frames(4)), movie[4:])


def test_tiff_folder_with_mismatched_frames(tmp_path, movie):
    tifffile.imwrite(tmp_path / "a1.tif", movie, photometric="minisblack")
    tifffile.imwrite(tmp_path / "a2.tif", movie[:, :5], photometric="minisblack")
    with pytest.raises(SourceError, match="a2.tif: frames are"):
        open_source(tmp_path).info  # noqa: B018


def _truncate(path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("kind", ["plain", "imagej", "bigendian"])
def test_half_truncated_tiff_yields_its_intact_frames(tmp_path, rng, caplog, kind):
    movie = rng.integers(0, 60000, (200, 32, 24), dtype=np.uint16)
    path = tmp_path / "cut.tif"
    kwargs = {"imagej": True} if kind == "imagej" else {"photometric": "minisblack"}
    if kind == "bigendian":
        kwargs["byteorder"] = ">"
    tifffile.imwrite(path, movie, **kwargs)
    offset = tifffile.TiffFile(path).pages[0].dataoffsets[0]
    _truncate(path, 0.5)  # the frames come first, the page directories last: all cut off
    intact = (path.stat().st_size - offset) // movie[0].nbytes
    assert 90 <= intact < 200
    src = open_source(path, frame_rate_hz=10.0)
    assert src.info.n_frames == intact
    np.testing.assert_array_equal(_stack(src), movie[:intact])
    np.testing.assert_array_equal(_stack(src.frames(intact - 20)), movie[intact - 20 : intact])
    assert f"{intact} of the 200 frames it announces are intact" in caplog.text


def test_truncated_page_by_page_tiff_stops_before_the_cut_page(tmp_path, rng, caplog):
    movie = rng.integers(0, 60000, (40, 16, 12), dtype=np.uint16)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for frame in movie:  # one directory per page, as many acquisition programs write
            tw.write(frame, photometric="minisblack", contiguous=False, metadata=None)
    page = tifffile.TiffFile(path).pages[30]
    cut = int(page.dataoffsets[0]) + 100  # inside the data of frame 30
    path.write_bytes(path.read_bytes()[:cut])
    src = open_source(path, frame_rate_hz=10.0)
    frames = _stack(src)
    assert 0 < len(frames) <= 30
    np.testing.assert_array_equal(frames, movie[: len(frames)])


def test_complex_movie_is_a_one_line_source_error(tmp_path, capsys):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f["movie"] = np.zeros((10, 8, 8), np.complex64)
    with pytest.raises(SourceError, match="pixels are complex64; expected integer or real"):
        open_source(path).info  # noqa: B018
    from online_cnmfe.cli import main

    assert main(["process", str(path), "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "complex64" in err, err


def test_hdf5_dataset_selection(tmp_path, movie):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("acq/frames", data=movie).attrs["fps"] = 15.0
        f.create_dataset("mean", data=movie.mean(0))
    with open_source(path) as src:
        assert isinstance(src, HDF5Source)
        assert src.info.frame_rate_hz == 15.0 and src.info.metadata["dataset"] == "acq/frames"
        np.testing.assert_array_equal(_stack(src.frames(1, 10)), movie[1:10])
    with h5py.File(path, "a") as f:
        f.create_dataset("other", data=movie)
    with pytest.raises(SourceError, match="--dataset"):
        open_source(path)
    with open_source(path, dataset="other") as src:
        np.testing.assert_array_equal(_stack(src), movie)
    with pytest.raises(SourceError, match="no dataset 'nope'"):
        open_source(path, dataset="nope")
    with h5py.File(path, "a") as f:
        f.create_dataset("movie", data=movie[:2])
    with open_source(path) as src:
        assert src.info.n_frames == 2  # 'movie' wins


def test_npy_memory_mapped(tmp_path, movie):
    np.save(tmp_path / "m.npy", movie)
    src = open_source(tmp_path / "m.npy", transform=FrameTransform(bin=2))
    assert isinstance(src, NpySource) and src.info.shape == (4, 6)
    np.testing.assert_array_equal(_stack(src), np.stack([_bin_reference(f, 2) for f in movie]))


def test_video_source_ignores_nothing_but_reports_rate(tmp_path, rng):
    frames = rng.integers(0, 256, (5, 8, 10), dtype=np.uint8)
    write_avi(tmp_path / "v.avi", frames, codec="ffv1")
    src = open_source(tmp_path / "v.avi")
    assert isinstance(src, VideoSource)
    assert src.info.frame_rate_hz == 60.0  # a plain video: its own rate
    assert VideoSource(tmp_path / "v.avi", frame_rate_hz=20.0).info.frame_rate_hz == 20.0
    np.testing.assert_array_equal(_stack(src), frames)


def _claim_frames(path, n: int) -> None:
    """Patch an AVI header (avih dwTotalFrames and strh dwLength) to claim ``n`` frames."""
    import struct

    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        i = data.find(tag) + 8 + offset
        data[i : i + 4] = struct.pack("<I", n)
    path.write_bytes(bytes(data))


def test_avi_whose_header_claims_more_frames_reads_up_to_stop(tmp_path, rng):
    frames = rng.integers(0, 256, (10, 8, 10), dtype=np.uint8)
    write_avi(tmp_path / "lie.avi", frames, codec="rawvideo")
    _claim_frames(tmp_path / "lie.avi", 25)
    src = open_source(tmp_path / "lie.avi")
    assert src.info.n_frames == 25  # what the header says
    got = np.stack([f.pixels for f in src.frames(0, 10)])  # all it holds: no error
    np.testing.assert_array_equal(got, frames)
    assert [f.frame_index for f in src.frames(3, 7)] == [3, 4, 5, 6]
    with pytest.raises(SourceError, match=r"claims 25 frames but the file ends after 10.*--max"):
        list(src.frames(0, 11))


def test_corrupted_wireless_avi_replays(shared_data):
    src = open_source(shared_data / "miniscope_wireless_corrupted_60x200x200.avi")
    assert (src.info.shape, src.info.dtype, src.info.n_frames) == ((200, 200), "uint8", 60)
    frames = list(src)
    assert len(frames) == 60
    assert all(f.pixels.shape == (200, 200) for f in frames)


def test_real_tiff_fixture(shared_data):
    path = shared_data / "ideas_nwb_onephotonseries_200x35x29_u16.tif"
    src = open_source(path, frame_rate_hz=5.56)
    np.testing.assert_array_equal(_stack(src), tifffile.imread(path))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("bad.tif", b"II*\x00garbage", "not a readable TIFF"),
        ("bad.h5", b"not hdf5", "not a readable HDF5"),
        ("bad.npy", b"\x93NUMPY garbage", "not a readable .npy"),
        ("bad.avi", b"RIFF" + bytes(40), "cannot read the video"),
        ("bad.xyz", b"", "unknown kind"),
    ],
)
def test_unreadable_files_raise_source_error(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=match):
        open_source(tmp_path / name)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(SourceError, match="no such"):
        open_source(tmp_path / "nothing.tif")
    with pytest.raises(SourceError, match="neither"):
        open_source(tmp_path)


def test_frame_range_validation(tmp_path, movie):
    np.save(tmp_path / "m.npy", movie)
    src = open_source(tmp_path / "m.npy")
    with pytest.raises(ValueError, match="beyond"):
        next(src.frames(11))
    with pytest.raises(ValueError, match="invalid"):
        next(src.frames(5, 3))


def test_crop_outside_frame_is_a_source_error(tmp_path, movie):
    np.save(tmp_path / "m.npy", movie)
    src = open_source(tmp_path / "m.npy", transform=FrameTransform(crop=(0, 0, 50, 50)))
    with pytest.raises(SourceError, match="does not fit"):
        src.info  # noqa: B018


# ---------------------------------------------------------------- simulated and camera
def test_simulated_source_is_deterministic_and_endless():
    from acquisition.simulator_params import SimulationParams

    params = SimulationParams(height=32, width=32, n_frames=None, n_neurons=4, seed=3)
    src = SimulatedSource(params)
    info = src.info
    assert info.n_frames is None and info.kind == "synthetic" and info.shape == (32, 32)
    assert info.metadata["simulation"]["seed"] == 3
    a = _stack(src.frames(30, 40))
    b = _stack(SimulatedSource(params).frames(30, 40))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint16 and a.std() > 0
    frames = list(src.frames(0, 70))  # crosses generator blocks
    assert [f.frame_index for f in frames] == list(range(70))
    np.testing.assert_array_equal(_stack(frames[30:40]), a)


def test_simulated_source_with_n_frames_ends():
    from acquisition.simulator_params import SimulationParams

    src = SimulatedSource(SimulationParams(height=16, width=16, n_frames=5, n_neurons=1))
    assert len(list(src)) == 5


def test_camera_without_device_gives_a_clear_error():
    with pytest.raises(SourceError, match="no camera at index 57.*acquire replay"):
        CameraSource(57)
