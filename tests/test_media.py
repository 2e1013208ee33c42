"""Video decoding (extractors.media.read_video_frames): sampling, content, broken files."""
from __future__ import annotations

import numpy as np
import pytest

from extractors import media
from extractors.base import ItemError
from extractors.media import read_video_frames, uniform_indices
from video_fixtures import moving_frames, write_gif, write_mp4, write_video


def test_uniform_indices():
    assert uniform_indices(16, 4).tolist() == [2, 6, 10, 14]  # segment centres
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]  # shorter clip: every frame
    assert uniform_indices(0, 8).tolist() == []
    idx = uniform_indices(1000, 7)
    assert len(set(idx.tolist())) == 7 and idx.min() >= 0 and idx.max() < 1000


@pytest.fixture(scope="module")
def clip():
    return moving_frames(16, (64, 96), step=(3, 1), seed=3)


def _best_match(frame: np.ndarray, source: list[np.ndarray]) -> int:
    errs = [np.abs(frame[: s.shape[0], : s.shape[1]].astype(int) - s[: frame.shape[0], : frame.shape[1]]).mean()
            for s in source]
    return int(np.argmin(errs))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_uniform_sampling_returns_the_right_frames(tmp_path, clip, suffix):
    path = write_video(tmp_path / f"clip{suffix}", clip)
    frames = read_video_frames(path, n_frames=4)
    assert len(frames) == 4
    assert all(f.dtype == np.uint8 and f.shape == (64, 96, 3) for f in frames)
    assert [_best_match(f, clip) for f in frames] == uniform_indices(16, 4).tolist()
    err = np.abs(frames[0].astype(int) - clip[2]).mean()
    assert err < (8 if suffix == ".mp4" else 20)  # lossy H.264 / 256-colour GIF


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_all_frames_and_short_clips(tmp_path, clip, suffix):
    path = write_video(tmp_path / f"clip{suffix}", clip)
    frames = read_video_frames(path, sampling="all")
    assert [_best_match(f, clip) for f in frames] == list(range(16))
    assert len(read_video_frames(path, n_frames=40)) == 16  # asks for more than there are


def test_count_without_header_falls_back_to_packets(tmp_path, clip, monkeypatch):
    path = write_mp4(tmp_path / "clip.mp4", clip)
    monkeypatch.setattr(media, "_header_frames", lambda stream: 0)  # container gives no count
    frames = read_video_frames(path, n_frames=4)
    assert [_best_match(f, clip) for f in frames] == [2, 6, 10, 14]
    monkeypatch.setattr(media, "_count_packets", lambda p: 0)  # nor do the packets
    assert [_best_match(f, clip) for f in read_video_frames(path, n_frames=4)] == [2, 6, 10, 14]
    monkeypatch.setattr(media, "_count_packets", lambda p: 17)  # one too many
    assert [_best_match(f, clip) for f in read_video_frames(path, n_frames=4)] == [2, 6, 10, 14]


def test_wrong_header_count(tmp_path, clip, monkeypatch):
    path = write_mp4(tmp_path / "clip.mp4", clip)
    monkeypatch.setattr(media, "_header_frames", lambda stream: 17)  # slightly off: re-sampled
    assert [_best_match(f, clip) for f in read_video_frames(path, n_frames=4)] == [2, 6, 10, 14]
    monkeypatch.setattr(media, "_header_frames", lambda stream: 40)  # far off: truncated file
    with pytest.raises(ItemError, match="header announces 40 frames, only 16 decode"):
        read_video_frames(path, n_frames=4)
    with pytest.raises(ItemError, match="header announces 40 frames"):
        read_video_frames(path, sampling="all")


def test_uniform_decoding_keeps_only_needed_frames(tmp_path, clip, monkeypatch):
    path = write_mp4(tmp_path / "clip.mp4", clip)
    converted = []
    real = media._frame_rgb
    monkeypatch.setattr(media, "_frame_rgb", lambda f: converted.append(1) or real(f))
    read_video_frames(path, n_frames=4)
    assert len(converted) == 4  # not 16


def test_gif_transparency_over_white(tmp_path):
    from PIL import Image

    # An animated GIF (written by PIL) whose palette index 0 is transparent: shown over
    # white, as images are.
    colours = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]
    palette = [c for rgb in colours for c in rgb] + [0] * (256 * 3 - 9)
    pics = []
    for t in range(4):
        idx = np.full((32, 32), 1 + t % 2, np.uint8)
        idx[:, :8] = 0  # transparent band
        im = Image.fromarray(idx, "P")
        im.putpalette(palette)
        pics.append(im)
    path = tmp_path / "alpha.gif"
    pics[0].save(path, save_all=True, append_images=pics[1:], transparency=0, disposal=2, duration=100, loop=0)
    got = read_video_frames(path, sampling="all")
    assert len(got) == 4
    assert (got[0][:, :8] == 255).all()  # transparent -> white, not black
    assert (got[0][:, 8:] == [200, 30, 30]).all() and (got[1][:, 8:] == [30, 200, 30]).all()


# ------------------------------------------------------------------ broken videos -> ItemError
def test_zero_byte_missing_and_text(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ItemError, match=r"empty file.*empty\.mp4"):
        read_video_frames(empty)
    with pytest.raises(ItemError, match="file not found"):
        read_video_frames(tmp_path / "nope.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("definitely not a video\n" * 50)
    with pytest.raises(ItemError, match=r"cannot decode video.*notes\.mp4"):
        read_video_frames(text)


def test_truncated_mp4(tmp_path, clip):
    full = write_mp4(tmp_path / "full.mp4", clip).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])  # moov atom (at the end) lost
    with pytest.raises(ItemError, match=r"cut\.mp4"):
        read_video_frames(cut)


def test_truncated_faststart_mp4(tmp_path, clip):
    import av

    # moov first: the header promises 16 frames, the cut file holds fewer.
    path = tmp_path / "fs.mp4"
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        s.options = {"crf": "12", "preset": "ultrafast"}
        for f in clip:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    assert len(read_video_frames(path, 4)) == 4
    data = path.read_bytes()
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(ItemError, match=r"(truncated|cannot decode).*fs_cut\.mp4"):
        read_video_frames(cut, 4)


def test_truncated_gif(tmp_path, clip):
    full = write_gif(tmp_path / "full.gif", clip).read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ItemError, match=r"truncated GIF.*cut\.gif"):
        read_video_frames(cut)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "sound.wav"
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    with pytest.raises(ItemError, match=r"no video stream.*sound\.wav"):
        read_video_frames(path)


def test_bad_sampling_is_a_value_error(tmp_path, clip):
    path = write_mp4(tmp_path / "clip.mp4", clip)
    with pytest.raises(ValueError, match="sampling"):
        read_video_frames(path, sampling="random")


def test_real_fetv_gifs(shared_data):
    import glob

    paths = sorted(glob.glob(str(shared_data / "fetv" / "videos" / "*" / "*.gif")))
    if not paths:
        pytest.skip("no FETV GIFs under ../shared/data/fetv/videos")
    for p in paths[::40]:  # one per generator folder or so: keeps it quick
        frames = read_video_frames(p, n_frames=8)
        assert len(frames) == 8
        assert len({f.shape for f in frames}) == 1 and frames[0].dtype == np.uint8
        assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:])]) > 0.1  # they move
