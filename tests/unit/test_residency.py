"""The pure parts of proxy.engine.residency: reading /proc's smaps and status texts."""

from __future__ import annotations

from proxy.engine.residency import Region, drop_pages, mapped_rss, parse_smaps

DATA = "/var/lib/proxy/lmdb/data.mdb"

SMAPS = f"""\
55d0c0a00000-55d0c0c00000 rw-p 00000000 00:00 0                          [heap]
Size:               2048 kB
Rss:                1500 kB
Anonymous:          1500 kB
7f0000000000-7f0040000000 r--s 00000000 08:01 1234                       {DATA}
Size:            1048576 kB
KernelPageSize:        4 kB
Rss:               81236 kB
Pss:               81236 kB
Shared_Clean:          0 kB
7f0050000000-7f0050002000 rw-s 00000000 08:01 1235                       /var/lib/proxy/lmdb/lock.mdb
Size:                  8 kB
Rss:                   8 kB
7f0060000000-7f0060100000 r--s 00000000 08:01 1234                       {DATA} (deleted)
Size:               1024 kB
Rss:                  12 kB
7f0070000000-7f0070001000 r--p 00000000 08:01 99                         /lib/x86_64-linux-gnu/libc.so.6
Size:                  4 kB
Rss:                   4 kB
7f0080000000-7f0080001000 r--p 00000000 08:01 1234                       {DATA}
Size:                  4 kB
Rss:                   4 kB
"""


def test_parse_smaps_finds_every_mapping_of_the_file_with_its_rss() -> None:
    regions = parse_smaps(SMAPS, DATA)
    assert regions == [
        Region(0x7F0000000000, 0x7F0040000000, True, 81236 * 1024),
        Region(0x7F0060000000, 0x7F0060100000, True, 12 * 1024),
        Region(0x7F0080000000, 0x7F0080001000, False, 4 * 1024),
    ]


def test_parse_smaps_ignores_other_files_and_prefixes_of_the_path() -> None:
    assert parse_smaps(SMAPS, "/var/lib/proxy/lmdb/lock.mdb") == [Region(0x7F0050000000, 0x7F0050002000, True, 8192)]
    assert parse_smaps(SMAPS, "/var/lib/proxy/lmdb/data") == []
    assert parse_smaps("", DATA) == []


def test_mapped_rss_adds_file_and_shared_memory_pages() -> None:
    status = "Name:\tpython\nVmRSS:\t 130000 kB\nRssAnon:\t 36000 kB\nRssFile:\t 90000 kB\nRssShmem:\t 4000 kB\n"
    assert mapped_rss(status) == 94000 * 1024
    assert mapped_rss("Name:\tpython\n") == 0


def test_drop_pages_never_touches_a_private_mapping() -> None:
    # A private region would be zeroed by MADV_DONTNEED; it is skipped (the address is bogus, so
    # any madvise call on it would fail with an error instead).
    assert drop_pages([Region(0x10, 0x2010, False, 8192)]) == 0
