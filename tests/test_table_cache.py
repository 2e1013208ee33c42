"""The parsed-spreadsheet cache: same table as parsing, refreshed when the file changes."""
from __future__ import annotations

import pandas as pd
import pytest

from features_store import load_dataset
from features_store import table_cache


def _write(path, names, mos):
    pd.DataFrame({"name": names, "prompt": [f"a photo {i}" for i in range(len(names))], "mos": mos}).to_excel(
        path, index=False)


def _count_reads(monkeypatch):
    calls = []
    real = pd.read_excel

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(pd, "read_excel", counting)
    return calls


def test_second_load_comes_from_the_cache_and_is_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    _write(tmp_path / "info_train.xlsx", ["SDXL_0001.png", "DALLE2_0002.png"], [1.5, None])
    calls = _count_reads(monkeypatch)
    first = load_dataset(tmp_path)
    second = load_dataset(tmp_path)
    assert len(calls) == 1  # parsed once
    pd.testing.assert_frame_equal(first.df, second.df)
    assert [str(p) for p in first.load_problems] == [str(p) for p in second.load_problems]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


def test_an_edited_label_file_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "info_train.xlsx"
    _write(path, ["SDXL_0001.png", "SDXL_0002.png"], [1.0, 2.0])
    assert load_dataset(tmp_path).df["mos"].tolist() == [1.0, 2.0]
    _write(path, ["SDXL_0001.png", "SDXL_0002.png"], [1.0, 3.0])
    assert load_dataset(tmp_path).df["mos"].tolist() == [1.0, 3.0]


def test_off_unwritable_and_damaged_caches_fall_back_to_parsing(tmp_path, monkeypatch):
    _write(tmp_path / "info_train.xlsx", ["SDXL_0001.png"], [1.0])
    calls = _count_reads(monkeypatch)
    monkeypatch.setenv("AIGCQ_CACHE_DIR", "off")
    load_dataset(tmp_path), load_dataset(tmp_path)
    assert len(calls) == 2
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert load_dataset(tmp_path).df["item_id"].tolist() == ["SDXL_0001.png"]
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset(tmp_path)
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_text("{ half a file")
    n = len(calls)
    assert load_dataset(tmp_path).df["mos"].tolist() == [1.0]
    assert len(calls) == n + 1  # parsed again, entry replaced
    assert load_dataset(tmp_path).df["mos"].tolist() == [1.0] and len(calls) == n + 1


def test_cache_key_covers_read_options(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "t.xlsx"
    _write(path, ["a.png"], [1.0])
    with_header = table_cache.cached_table(path, lambda: pd.read_excel(path, header=0, dtype=str), header=0)
    without = table_cache.cached_table(path, lambda: pd.read_excel(path, header=None, dtype=str), header=None)
    assert list(with_header.columns) == ["name", "prompt", "mos"] and list(without.columns) == [0, 1, 2]
    assert len(without) == 2


@pytest.mark.shared
def test_aigiqa20k_cached_equals_parsed(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", "off")
    parsed = load_dataset(shared_data / "aigiqa20k")
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset(shared_data / "aigiqa20k")  # fills the cache
    cached = load_dataset(shared_data / "aigiqa20k")
    pd.testing.assert_frame_equal(parsed.df, cached.df)
    assert cached.root == parsed.root and len(cached) == 20000


def _tables(tmp_path, n):
    """n label files of different content, and a function caching one of them (True when it was parsed)."""
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"t{i}.xlsx")
        _write(paths[-1], [f"img{i}.png"], [float(i)])

    def load(i):
        parsed = []
        df = table_cache.cached_table(paths[i], lambda: parsed.append(i) or pd.read_excel(paths[i], dtype=str))
        assert df["name"].tolist() == [f"img{i}.png"]
        return bool(parsed)

    return load


def test_the_cache_keeps_at_most_n_entries_evicting_the_least_recently_used(tmp_path, monkeypatch):
    # before: every edited label file left one more table in ~/.cache/aigcq/tables, without bound
    import time

    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(table_cache, "MAX_ENTRIES", 2)
    load = _tables(tmp_path, 3)
    for i in (0, 1, 0):  # 0 parsed, 1 parsed, 0 a hit: now 1 is the least recently used
        load(i)
        time.sleep(0.05)  # distinct mtimes on coarse file clocks
    assert load(2)  # a third table: one entry must go
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not load(0) and not load(2)  # kept: the recently used and the new one
    assert load(1)  # evicted: parsed again


def test_the_cache_keeps_at_most_m_bytes_but_always_the_newest_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    load = _tables(tmp_path, 2)
    load(0)
    (entry,) = (tmp_path / "cache").glob("*.json")
    monkeypatch.setattr(table_cache, "MAX_BYTES", entry.stat().st_size + 10)  # room for one entry
    load(1)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1 and not entry.exists()
    assert not load(1) and load(0)
    monkeypatch.setattr(table_cache, "MAX_BYTES", 1)  # smaller than any entry: the one just written stays
    assert load(1)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1 and not load(1)


def test_eviction_leaves_other_processes_temporaries_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGCQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(table_cache, "MAX_ENTRIES", 1)
    load = _tables(tmp_path, 2)
    load(0)
    tmp = tmp_path / "cache" / ".tmp-abc.json"
    tmp.write_text("being written")
    load(1)
    assert tmp.exists() and len([p for p in (tmp_path / "cache").glob("*.json") if p.name[0] != "."]) == 1
