"""Miniscope folders (DAQ-QT v1/v2 and legacy layouts) built in the test with PyAV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from acquisition.sources import MiniscopeSource, open_source
from acquisition.sources.miniscope import (
    find_device_folder,
    parse_frame_rate,
    unwrap_daq_counter,
)
from acquisition.transforms import FrameTransform
from online_cnmfe.errors import SourceError

H, W = 24, 32


def write_avi(path: Path, frames: np.ndarray, codec: str = "ffv1", bgr: bool = False) -> None:
    """Write grey frames as the DAQ software does: FFV1 or GREY (raw 8-bit), 60 fps header."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=60)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr24" if bgr else "gray"
        if codec == "rawvideo" and not bgr:
            stream.codec_tag = "GREY"
        for frame in frames:
            data = np.repeat(frame[:, :, None], 3, axis=2) if bgr else frame
            vf = av.VideoFrame.from_ndarray(data, format="bgr24" if bgr else "gray")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_movie(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, H, W), dtype=np.uint8)


def write_miniscope_session(
    root: Path,
    movie: np.ndarray,
    *,
    frames_per_file: int = 4,
    codec: str = "ffv1",
    daq: list[int] | None = None,
    t_ms: np.ndarray | None = None,
    frame_rate: str = "20FPS",
    device: str = "My_V4_Miniscope",
) -> Path:
    """Write a DAQ-QT session: session metaData.json + device folder with chunks and CSVs.

    ``daq`` given → v2 timeStamps.csv with a DAQ Frame Number column, else v1.
    """
    dev = root / device
    dev.mkdir(parents=True)
    (root / "metaData.json").write_text(
        json.dumps({"researcherName": "t", "miniscopes": [device], "cameras": ["BehavCam_0"]})
    )
    (dev / "metaData.json").write_text(
        json.dumps(
            {
                "deviceName": device,
                "deviceType": "Miniscope_V4_BNO",
                "framesPerFile": frames_per_file,
                "frameRate": frame_rate,
                "gain": "Medium",
            }
        )
    )
    for k, lo in enumerate(range(0, len(movie), frames_per_file)):
        write_avi(dev / f"{k}.avi", movie[lo : lo + frames_per_file], codec=codec)
    if t_ms is None:
        t_ms = np.arange(len(movie)) * 50.0 + 3.0
    header = "Frame Number,Time Stamp (ms),Buffer Index" + (",DAQ Frame Number" if daq else "")
    lines = [header]
    for i, t in enumerate(t_ms):
        row = f"{i},{t:g},{i % 3}" + (f",{daq[i]}" if daq else "")
        lines.append(row)
    (dev / "timeStamps.csv").write_text("\n".join(lines) + "\n")
    # a behaviour camera that must not be picked
    cam = root / "BehavCam_0"
    cam.mkdir()
    write_avi(cam / "0.avi", make_movie(2, seed=99))
    (cam / "timeStamps.csv").write_text(
        "Frame Number,Time Stamp (ms),Buffer Index\n0,0,0\n1,33,0\n"
    )
    return dev


# ----------------------------------------------------------------------- pure helpers
@pytest.mark.parametrize(
    ("value", "expected"),
    [("20FPS", 20.0), ("30 FPS", 30.0), ("7.5fps", 7.5), (15, 15.0), ("fast", None), (0, None)],
)
def test_parse_frame_rate(value, expected):
    assert parse_frame_rate(value) == expected


def test_unwrap_daq_counter_wrap_loss_unknown_and_reset():
    raw = np.array([65533, 65534, 65535, 0, 2, -1, 4, 5, 1, 2])
    out, lost, resets = unwrap_daq_counter(raw)
    # 65535 -> 0 wraps (+1); 0 -> 2 loses one; -1 unknown; 2 -> 4 over two rows is fine;
    # 5 -> 1 is a re-seed (counted, counting continues)
    assert out.tolist() == [65533, 65534, 65535, 65536, 65538, -1, 65540, 65541, 65542, 65543]
    assert lost == [[3, 1]]
    assert resets == 1


def test_unwrap_daq_counter_all_unknown():
    out, lost, resets = unwrap_daq_counter(np.array([-1, -1]))
    assert out.tolist() == [-1, -1] and lost == [] and resets == 0


# ----------------------------------------------------------------------- folders
@pytest.mark.parametrize("codec", ["ffv1", "rawvideo"])
def test_v2_session_with_wrap_lost_frame_and_short_last_chunk(tmp_path, codec):
    movie = make_movie(10)  # chunks of 4: 4 + 4 + 2 (short last chunk)
    daq = [65532, 65533, 65534, 65535, 0, 1, 3, 4, 5, 6]  # wraps; hardware frame 2 lost
    t_ms = np.arange(10) * 50.0 + 1000.0
    dev = write_miniscope_session(tmp_path, movie, codec=codec, daq=daq, t_ms=t_ms)
    for path in (tmp_path, dev):  # session folder or device folder
        src = open_source(path)
        assert isinstance(src, MiniscopeSource)
        info = src.info
        assert info.frame_rate_hz == 20.0  # from "20FPS", not the AVI header's 60
        assert (info.shape, info.dtype, info.n_frames) == ((H, W), "uint8", 10)
        assert info.metadata["timestamps_version"] == 2
        assert info.metadata["lost_daq_frames"] == 1
        assert info.metadata["lost_ranges"] == [[5, 1]]
        assert info.metadata["device"]["gain"] == "Medium"
        frames = list(src)
        assert [f.frame_index for f in frames] == list(range(10))
        np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)
        assert [f.t_acq_ms for f in frames] == t_ms.tolist()
        assert [f.daq_frame for f in frames] == [
            65532, 65533, 65534, 65535, 65536, 65537, 65539, 65540, 65541, 65542
        ]  # fmt: skip


def test_v1_timestamps_and_frame_range_across_chunks(tmp_path):
    movie = make_movie(10, seed=1)
    write_miniscope_session(tmp_path, movie, frame_rate="30FPS")
    src = open_source(tmp_path)
    assert src.info.metadata["timestamps_version"] == 1
    assert src.info.frame_rate_hz == 30.0
    frames = list(src.frames(3, 9))
    assert [f.frame_index for f in frames] == list(range(3, 9))
    assert all(f.daq_frame is None for f in frames)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie[3:9])


def test_three_channel_chunks_give_one_channel(tmp_path):
    movie = make_movie(3, seed=2)
    dev = tmp_path / "Miniscope"
    dev.mkdir()
    write_avi(dev / "0.avi", movie, codec="rawvideo", bgr=True)
    (dev / "timeStamps.csv").write_text(
        "Frame Number,Time Stamp (ms),Buffer Index\n0,0,0\n1,100,0\n2,200,0\n"
    )
    src = open_source(dev)
    assert src.info.shape == (H, W)
    assert src.info.frame_rate_hz == pytest.approx(10.0)  # no metaData.json: from timestamps
    np.testing.assert_array_equal(np.stack([f.pixels for f in src]), movie)


def test_crop_and_bin_on_the_fly(tmp_path):
    movie = make_movie(5, seed=3)
    write_miniscope_session(tmp_path, movie)
    transform = FrameTransform(crop=(2, 4, 12, 20), bin=2)
    src = open_source(tmp_path, transform=transform)
    assert src.info.shape == (6, 10)
    assert src.info.metadata["source_shape"] == [H, W]
    got = np.stack([f.pixels for f in src])
    block = movie[:, 2:14, 4:24].astype(np.int64).reshape(5, 6, 2, 10, 2)
    expected = np.floor(block.mean(axis=(2, 4)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_legacy_layout(tmp_path):
    movie = make_movie(7, seed=4)
    write_avi(tmp_path / "msCam1.avi", movie[:4])
    write_avi(tmp_path / "msCam2.avi", movie[4:])
    write_avi(tmp_path / "behavCam1.avi", make_movie(2, seed=5))
    rows = ["camNum\tframeNum\tsysClock\tbuffer"]
    rows += [f"0\t{i + 1}\t{i * 33}\t0" for i in range(2)]  # behaviour camera: 2 frames
    rows += [f"1\t{i + 1}\t{i * 50 if i else 935703178}\t0" for i in range(7)]  # garbage first
    (tmp_path / "timestamp.dat").write_text("\n".join(rows) + "\n")
    src = open_source(tmp_path)
    assert src.info.metadata["legacy"] is True
    assert src.info.metadata["first_timestamp_fixed"] is True
    assert src.info.frame_rate_hz == pytest.approx(20.0)
    frames = list(src)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)
    assert [f.t_acq_ms for f in frames] == [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0]


def test_timestamp_count_mismatch_extrapolates(tmp_path):
    movie = make_movie(6, seed=6)
    dev = write_miniscope_session(tmp_path, movie, t_ms=np.arange(4) * 50.0)
    src = open_source(dev)
    assert src.info.metadata["timestamp_count_mismatch"] == [4, 6]
    assert [f.t_acq_ms for f in src] == [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]


def test_chunks_without_timestamps_use_the_metadata_rate(tmp_path):
    movie = make_movie(6, seed=10)
    dev = write_miniscope_session(tmp_path, movie, frame_rate="10FPS")
    (dev / "timeStamps.csv").unlink()
    src = open_source(tmp_path)
    assert src.info.frame_rate_hz == 10.0 and src.info.metadata["timestamps_version"] is None
    frames = list(src)
    assert [f.t_acq_ms for f in frames] == [100.0 * i for i in range(6)]
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), movie)


def test_several_devices_need_a_choice(tmp_path):
    movie = make_movie(2)
    write_miniscope_session(tmp_path / "s", movie, device="scopeA")
    other = tmp_path / "s" / "scopeB"
    other.mkdir()
    write_avi(other / "0.avi", movie)
    (other / "timeStamps.csv").write_text(
        "Frame Number,Time Stamp (ms),Buffer Index\n0,0,0\n1,50,0\n"
    )
    (tmp_path / "s" / "metaData.json").write_text(json.dumps({"miniscopes": ["scopeA", "scopeB"]}))
    with pytest.raises(SourceError, match="several devices"):
        find_device_folder(tmp_path / "s")
    assert find_device_folder(tmp_path / "s", device="scopeB") == other


def test_truncated_chunk_is_reported_lost_and_later_frames_keep_their_indices(tmp_path, caplog):
    movie = make_movie(12, seed=7)
    dev = write_miniscope_session(tmp_path, movie, codec="rawvideo")  # 3 chunks of 4
    chunk = dev / "1.avi"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) - H * W - 100])  # the last frame of chunk 1 is cut
    got = list(open_source(tmp_path))
    index = [f.frame_index for f in got]
    bad = index[index.index(3) + 1 :].index(8) + 4  # first frame of chunk 1 not delivered
    assert bad in (6, 7)
    assert index == [*range(bad), 8, 9, 10, 11]  # chunk 2 keeps its own indices and times
    assert [f.t_acq_ms for f in got[-4:]] == [50.0 * i + 3.0 for i in range(8, 12)]
    np.testing.assert_array_equal(np.stack([f.pixels for f in got[-4:]]), movie[8:])
    assert re.search(r"1\.avi: frame \d .*(truncated|corrupt).* lost, the replay goes on",
                     caplog.text)  # fmt: skip


def test_truncated_ffv1_chunk_loses_its_frames_not_the_replay(tmp_path, caplog):
    movie = make_movie(12, seed=9)
    dev = write_miniscope_session(tmp_path, movie, codec="ffv1")
    chunk = dev / "1.avi"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: int(len(data) * 0.6)])
    got = list(open_source(tmp_path))
    index = [f.frame_index for f in got]
    assert index[:4] == [0, 1, 2, 3] and index[-4:] == [8, 9, 10, 11]
    assert all(4 <= i < 8 for i in index[4:-4])  # what chunk 1 still gave, in order
    np.testing.assert_array_equal(np.stack([f.pixels for f in got[-4:]]), movie[8:])
    assert "1.avi" in caplog.text and "the replay goes on" in caplog.text


def test_missing_and_unreadable_chunks_leave_gaps_at_the_right_indices(tmp_path, caplog):
    movie = make_movie(16, seed=8)
    daq = list(range(100, 116))
    dev = write_miniscope_session(tmp_path, movie, daq=daq)  # chunks 0-3 of 4 frames
    (dev / "1.avi").unlink()
    (dev / "2.avi").write_bytes(b"RIFF" + bytes(64))
    src = open_source(tmp_path)
    meta = src.info.metadata
    assert meta["missing_ranges"] == [[4, 7, "1.avi missing"], [8, 11, "2.avi unreadable"]]
    assert "timestamp_count_mismatch" not in meta and src.info.n_frames == 8
    got = list(src)
    assert [f.frame_index for f in got] == [0, 1, 2, 3, 12, 13, 14, 15]
    assert [f.t_acq_ms for f in got] == [50.0 * i + 3.0 for i in (0, 1, 2, 3, 12, 13, 14, 15)]
    assert [f.daq_frame for f in got] == [100, 101, 102, 103, 112, 113, 114, 115]
    present = [0, 1, 2, 3, 12, 13, 14, 15]
    np.testing.assert_array_equal(np.stack([f.pixels for f in got]), movie[present])
    assert "8 frame(s) missing from the recording (4-7: 1.avi missing; 8-11: 2.avi" in caplog.text
    assert [f.frame_index for f in src.frames(4, 6)] == [12, 13]  # positions skip the gap


def test_a_missing_first_chunk_starts_at_its_index(tmp_path):
    movie = make_movie(8, seed=11)
    dev = write_miniscope_session(tmp_path, movie)
    (dev / "0.avi").unlink()
    src = open_source(tmp_path)
    assert src.info.metadata["missing_ranges"] == [[0, 3, "0.avi missing"]]
    assert [f.frame_index for f in src] == [4, 5, 6, 7]


def test_bad_timestamps_header(tmp_path):
    dev = write_miniscope_session(tmp_path, make_movie(2))
    (dev / "timeStamps.csv").write_text("frame,time\n0,0\n")
    with pytest.raises(SourceError, match="timeStamps.csv: header"):
        open_source(tmp_path)
