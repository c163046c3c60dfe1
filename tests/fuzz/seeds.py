"""The seed inputs of the fuzz targets: real ones from the repository, and hostile ones.

Real: the example city's readings, fences and loans, and every golden scenario's input
(deduplicated by shape, so each kind of message is there once or twice). Hostile: huge
numbers, NaN and Infinity as text, nesting up to 1000 levels and past it, NUL bytes,
invalid UTF-8, 10,000-element arrays, mixed types, boundary values.

`python -m tests.fuzz seed` writes them under `tests/fuzz/corpus/<target>/`, one file per
input, named for what it is; inputs over `MAX_SEED_FILE_BYTES` are not written but are
replayed from memory by the CI test all the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
CITY = REPO / "engine" / "examples" / "city"
GOLDEN = REPO / "tests" / "golden"
CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_SEED_FILE_BYTES = 128 * 1024
PER_SHAPE = 2

Seed = tuple[str, bytes]

GPS = "telematics/trk-001/gps"
VIB = "telematics/trk-001/vib"
STATUS = "telematics/trk-001/status"
OWNTRACKS = "owntracks/car03/phone"
TS = 1_795_910_400_548
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
NOW_MS = 1_795_940_100_000
HUGE_INT = "9" * 5000
DEEP = 1000


def lenient(value: object) -> bytes:
    """JSON as a sloppy sender writes it: NaN, Infinity and huge integers stay as they are."""
    return json.dumps(value, allow_nan=True).encode()


def nest(inner: str, depth: int, *, obj: bool = False) -> str:
    """`inner` wrapped in `depth` arrays (or objects with key "a")."""
    if obj:
        return '{"a":' * depth + inner + "}" * depth
    return "[" * depth + inner + "]" * depth


def message(topic: str, payload: bytes | str) -> bytes:
    """A decode input: `topic LF payload`."""
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return topic.encode("utf-8", "surrogateescape") + b"\n" + raw


# -- real inputs


def _reading_lines() -> Iterator[tuple[str, dict[str, object]]]:
    sources = [CITY / "readings.jsonl", *sorted(GOLDEN.glob("*/input.jsonl"))]
    for path in sources:
        source = "city" if path.parent == CITY else path.parent.name
        for line in path.read_bytes().splitlines():
            if line.strip():
                yield source, json.loads(line)


def _shape(record: dict[str, object]) -> tuple[object, ...]:
    topic = str(record["topic"])
    parts = topic.split("/")
    payload = record["payload"]
    if isinstance(payload, dict):
        body: object = tuple(sorted(payload))
    elif isinstance(payload, list):
        body = ("array", min(len(payload), 3))
    else:
        body = ("text", str(payload)[:12])
    return parts[0], parts[-1], type(payload).__name__, body


def real_decode_seeds() -> list[Seed]:
    """The readings of the example city and the golden scenarios, a few of each shape."""
    seen: dict[tuple[object, ...], int] = {}
    seeds: list[Seed] = []
    for source, record in _reading_lines():
        shape = _shape(record)
        if seen.get(shape, 0) >= PER_SHAPE:
            continue
        seen[shape] = seen.get(shape, 0) + 1
        payload = record["payload"]
        raw = (
            payload.encode("utf-8", "surrogateescape")
            if isinstance(payload, str)
            else lenient(payload)
        )
        seeds.append((f"real-{source}-{len(seeds):03d}", message(str(record["topic"]), raw)))
    return seeds


def _fence_files() -> list[tuple[str, Path]]:
    return [("city", CITY / "fences.geojson")] + [
        (path.parent.name, path) for path in sorted(GOLDEN.glob("*/fences.geojson"))
    ]


def real_fence_seeds() -> list[Seed]:
    """The city's fences one by one and whole; one golden collection whole."""
    seeds: list[Seed] = []
    city = orjson.loads((CITY / "fences.geojson").read_bytes())
    seeds.append(("real-city-collection", orjson.dumps(city)))
    seeds += [(f"real-city-{f['id']}", orjson.dumps(f)) for f in city["features"]]
    for name, path in _fence_files()[1:3]:
        seeds.append((f"real-{name}-collection", path.read_bytes()))
    return seeds


def real_loan_seeds() -> list[Seed]:
    """The city's loans as one array, and each on its own."""
    loans = orjson.loads((CITY / "loans.json").read_bytes())
    seeds: list[Seed] = [("real-city-loans", orjson.dumps(loans))]
    seeds += [(f"real-city-{loan['loan_id']}", orjson.dumps(loan)) for loan in loans[:6]]
    return seeds


# -- hostile inputs


def _gps(**fields: object) -> dict[str, object]:
    return {"ts": TS, "lat": 31.2, "lon": 121.4, **fields}


def hostile_decode_seeds() -> list[Seed]:
    """Messages built to break the decoder."""
    good = lenient(_gps())
    valid_1000 = [_gps(ts=TS + i, seq=i) for i in range(1000)]
    mixed: list[object] = [_gps(), _gps(lat=91), "x", None, [1], _gps(ts="2026-11-29T08:15:00Z")]
    owntracks = {"_type": "location", "tst": TS // 1000, "lat": 31.2, "lon": 121.4}
    seeds: list[Seed] = [
        ("huge-int-ts", message(GPS, f'{{"ts": {HUGE_INT}, "lat": 1, "lon": 2}}')),
        ("huge-int-seq", message(GPS, lenient(_gps(seq=2**64, sats=-(2**63) - 1)))),
        ("int64-edge", message(GPS, lenient(_gps(seq=2**63 - 1, sats=-(2**63))))),
        ("float-overflow-text", message(GPS, '{"ts": 1795910400548, "lat": 1e999, "lon": 2}')),
        ("float-max", message(GPS, lenient(_gps(hdop=1.7976931348623157e308)))),
        ("float-denormal", message(GPS, lenient(_gps(lat=5e-324, lon=-5e-324)))),
        ("negative-zero", message(GPS, '{"ts": 1795910400548, "lat": -0.0, "lon": -0}')),
        ("nan-text", message(GPS, lenient(_gps(lat=math.nan)))),
        ("infinity-text", message(GPS, lenient(_gps(lon=math.inf, speed_kmh=-math.inf)))),
        ("nan-string", message(GPS, lenient(_gps(lat="NaN", lon="Infinity")))),
        ("ts-float", message(GPS, lenient(_gps(ts=1795910400548.5)))),
        ("ts-exponent", message(GPS, '{"ts": 1.795910400548e12, "lat": 1, "lon": 2}')),
        ("deep-array-1000", message(GPS, nest("1", DEEP))),
        ("deep-object-1000", message(GPS, nest("1", DEEP, obj=True))),
        ("deep-array-5000", message(GPS, nest("1", 5000))),
        ("deep-in-lat", message(GPS, f'{{"ts": {TS}, "lat": {nest("1", DEEP)}, "lon": 2}}')),
        ("deep-in-array-element", message(GPS, f"[{good.decode()}, {nest('{}', 999)}]")),
        ("nul-byte-raw", message(GPS, b'{"ts": 1795910400548,\x00 "lat": 1, "lon": 2}')),
        ("nul-escape", message(STATUS, lenient({"ts": TS, "vin": "LSVAB4182E212345\x00"}))),
        ("nul-in-topic", message("telematics/trk\x00001/gps", good)),
        ("invalid-utf8", message(GPS, b'{"ts": "\xff\xfe", "lat": 1, "lon": 2}')),
        ("overlong-utf8", message(GPS, b'{"ts": "\xc0\x80", "lat": 1, "lon": 2}')),
        ("lone-surrogate-escape", message(OWNTRACKS, '{"_type": "\\ud800", "tst": 1}')),
        ("lone-surrogate-utf8", message(GPS, '{"ts": "\ud83d", "lat": 1, "lon": 2}')),
        ("utf8-bom", message(GPS, b"\xef\xbb\xbf" + good)),
        ("utf16", message(GPS, json.dumps(_gps()).encode("utf-16"))),
        ("invalid-utf8-topic", message("telematics/trk-\udcff/gps", good)),
        ("array-10k-empty-objects", message(GPS, "[" + ",".join(["{}"] * 10_000) + "]")),
        ("array-10k-ints", message(VIB, "[" + ",".join(["1"] * 10_000) + "]")),
        ("array-1000-valid", message(GPS, orjson.dumps(valid_1000))),
        ("array-1001-valid", message(GPS, orjson.dumps([*valid_1000, _gps()]))),
        ("array-1000-mixed", message(GPS, lenient((mixed * 167)[:1000]))),
        ("array-empty", message(GPS, b"[]")),
        ("too-large", message(GPS, good + b" " * (256 * 1024 + 1 - len(good)))),
        ("exactly-the-limit", message(GPS, good + b" " * (256 * 1024 - len(good)))),
        ("mixed-types", message(GPS, lenient(_gps(ts=True, lat="31.2", lon=None, sats=1.5)))),
        ("mixed-types-2", message(GPS, lenient(_gps(ignition="true", seq=-1, hdop=[1])))),
        ("mixed-types-3", message(VIB, lenient({"ts": TS, "g": {"x": 1}, "duration_ms": 1.0}))),
        ("vib-extremes", message(VIB, lenient({"ts": TS, "g": -0.0, "duration_ms": 2**63}))),
        ("status-extremes", message(STATUS, lenient({"ts": TS, "battery_v": 100.0000001}))),
        ("vin-lowercase", message(STATUS, lenient({"ts": TS, "vin": "lsvab4182e2123456"}))),
        ("vin-short", message(STATUS, lenient({"ts": TS, "vin": "LSVAB4182E212345"}))),
        ("vin-unicode", message(STATUS, lenient({"ts": TS, "vin": "\uff2cSVAB4182E2123456"}))),
        ("empty-payload", message(GPS, b"")),
        ("whitespace-payload", message(GPS, b" \t\r\n")),
        ("null-payload", message(GPS, b"null")),
        ("number-payload", message(GPS, b"1")),
        ("string-payload", message(GPS, b'"{}"')),
        ("trailing-garbage", message(GPS, good + b"x")),
        ("two-objects", message(GPS, good + good)),
        ("owntracks-transition", message(OWNTRACKS, lenient({"_type": "transition", "tst": 1}))),
        ("owntracks-type-number", message(OWNTRACKS, lenient({"_type": 5}))),
        ("owntracks-tst-float", message(OWNTRACKS, lenient({"_type": "location", "tst": 1.5}))),
        ("owntracks-tst-huge", message(OWNTRACKS, f'{{"_type":"location","tst":{HUGE_INT}}}')),
        ("owntracks-valid", message(OWNTRACKS, lenient({**owntracks, "vel": 0, "cog": 90}))),
        ("owntracks-bad-cog", message(OWNTRACKS, lenient({**owntracks, "cog": 360.5}))),
        ("owntracks-bad-acc", message(OWNTRACKS, lenient({**owntracks, "acc": -1}))),
        (
            "owntracks-future",
            message(OWNTRACKS, lenient({**owntracks, "tst": NOW_MS // 1000 + 301})),
        ),
        ("topic-64", message("telematics/" + "a" * 64 + "/gps", good)),
        ("topic-65", message("telematics/" + "a" * 65 + "/gps", good)),
        ("topic-extra-level", message("telematics/trk-001/a/gps", good)),
        ("topic-owntracks-extra", message("owntracks/u/d/event", good)),
        ("topic-empty", message("", good)),
        ("topic-slash", message("/", good)),
        ("topic-empty-device", message("telematics//gps", good)),
        ("topic-upper-stream", message("telematics/trk-001/GPS", good)),
        ("topic-unicode", message("telematics/trk-ü/gps", good)),
        ("topic-owntracks-long", message("owntracks/" + "u" * 40 + "/" + "d" * 40, good)),
    ]
    for name, ts in [
        ("iso-feb-30", "2026-02-30T00:00:00Z"),
        ("iso-hour-24", "2026-11-29T24:00:00Z"),
        ("iso-leap-second", "2026-12-31T23:59:60Z"),
        ("iso-year-0", "0000-01-01T00:00:00Z"),
        ("iso-year-9999", "9999-12-31T23:59:59+14:00"),
        ("iso-long-fraction", "2026-11-29T08:15:00." + "9" * 200 + "Z"),
        ("iso-offset-2400", "2026-11-29T08:15:00+2400"),
        ("iso-space-minus-zero", "2026-11-29 08:15:00-0000"),
        ("iso-minutes-only", "2026-11-29T08:15Z"),
        ("iso-no-offset", "2026-11-29T08:15:00"),
        ("iso-arabic-digits", "٢٠٢٦-11-29T08:15:00Z"),
        ("iso-fullwidth", "\uff12\uff10\uff12\uff16-11-29T08:15:00Z"),
        ("iso-trailing", "2026-11-29T08:15:00Zjunk"),
        ("iso-empty", ""),
    ]:
        seeds.append((f"ts-{name}", message(GPS, lenient(_gps(ts=ts)))))
    for name, ts in [
        ("min-1", MIN_TS_MS - 1),
        ("min", MIN_TS_MS),
        ("max-1", MAX_TS_MS - 1),
        ("max", MAX_TS_MS),
        ("future-edge", NOW_MS + 300_000),
        ("future-over", NOW_MS + 300_001),
        ("negative", -1),
    ]:
        seeds.append((f"ts-{name}", message(GPS, lenient(_gps(ts=ts)))))
    return seeds


def _square(lon: float = 121.5, lat: float = 31.2, half: float = 0.001) -> list[list[float]]:
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half]]
    return [*ring, [lon - half, lat + half], [lon - half, lat - half]]


def _feature(geometry: object, **props: object) -> dict[str, object]:
    return {"type": "Feature", "geometry": geometry, "properties": {"kind": "zone", **props}}


def _polygon(*rings: object) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": list(rings)}


def _point(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Point", "coordinates": [lon, lat]}


def _ring_of(n: int, lon: float = 121.5, lat: float = 31.2, r: float = 0.01) -> list[object]:
    points = [
        [lon + r * math.cos(2 * math.pi * i / n), lat + r * math.sin(2 * math.pi * i / n)]
        for i in range(n)
    ]
    return [*points, points[0]]


def hostile_fence_seeds() -> list[Seed]:
    """GeoJSON documents built to break the fence parser."""
    square = _polygon(_square())
    circle = _point(121.5, 31.2)
    deep = nest("0", DEEP)
    text = {
        "deep-type": f'{{"type": {deep}}}',
        "deep-id": f'{{"type": "Feature", "id": {deep}, "geometry": null}}',
        "deep-coordinates": '{"type":"Feature","geometry":{"type":"Point","coordinates":'
        + deep
        + '},"properties":{"kind":"zone","radius_m":5}}',
        "deep-geometry": f'{{"type": "Feature", "geometry": {deep}, "properties": {{}}}}',
        "deep-kind": f'{{"type":"Feature","geometry":null,"properties":{{"kind":{deep}}}}}',
        "deep-collection-id": f'{{"type":"FeatureCollection","features":[{{"id":{deep}}}]}}',
        "deep-document": nest("{}", DEEP),
        "deep-document-obj": nest("1", DEEP, obj=True),
        "deep-past-orjson": nest("0", 1100),
        "nan-coordinates": '{"type":"Feature","geometry":{"type":"Point","coordinates":[NaN,0]},'
        '"properties":{"kind":"zone","radius_m":5}}',
        "infinity-radius": '{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},'
        '"properties":{"kind":"zone","radius_m":Infinity}}',
        "overflow-coordinates": '{"type":"Feature","geometry":{"type":"Point",'
        '"coordinates":[1e999,0]},"properties":{"kind":"zone","radius_m":5}}',
        "huge-int-coordinates": '{"type":"Feature","geometry":{"type":"Point","coordinates":['
        + HUGE_INT
        + ',0]},"properties":{"kind":"zone","radius_m":5}}',
        "huge-int-dwell": json.dumps(_feature(circle, radius_m=5))[:-2]
        + f', "dwell_s": -{HUGE_INT}}}}}',
        "huge-int-kind": f'{{"type":"Feature","geometry":null,"properties":{{"kind":{HUGE_INT}}}}}',
        "huge-int-radius": '{"type":"Feature","geometry":{"type":"Point","coordinates":[0,0]},'
        f'"properties":{{"kind":"zone","radius_m":{HUGE_INT}}}}}',
    }
    seeds: list[Seed] = [(name, body.encode()) for name, body in text.items()]
    docs: dict[str, object] = {
        "square": _feature(square, name="lot"),
        "square-3d": _feature(_polygon([[*p, 5.0] for p in _square()])),
        "square-4d": _feature(_polygon([[*p, 5.0, 1.0] for p in _square()])),
        "circle": _feature(circle, radius_m=150, category="pawnshop", dwell_s=600),
        "circle-no-radius": _feature(circle),
        "circle-radius-0": _feature(circle, radius_m=0),
        "circle-radius-negative": _feature(circle, radius_m=-1),
        "circle-radius-max": _feature(circle, radius_m=50_000),
        "circle-radius-over": _feature(circle, radius_m=50_000.000001),
        "circle-radius-denormal": _feature(circle, radius_m=5e-324),
        "circle-radius-string": _feature(circle, radius_m="150"),
        "circle-radius-bool": _feature(circle, radius_m=True),
        "circle-north-pole": _feature(_point(0, 90), radius_m=10),
        "circle-near-pole": _feature(_point(0, 89.9), radius_m=50_000),
        "circle-antimeridian": _feature(_point(180, 0), radius_m=10),
        "circle-near-antimeridian": _feature(_point(179.99, 0), radius_m=50_000),
        "circle-negative-zero": _feature(_point(-0.0, -0.0), radius_m=10),
        "circle-denormal-centre": _feature(_point(5e-324, -5e-324), radius_m=10),
        "circle-on-polygon": _feature(square, radius_m=10),
        "point-1d": _feature({"type": "Point", "coordinates": [1]}, radius_m=10),
        "point-string": _feature({"type": "Point", "coordinates": ["121", "31"]}, radius_m=1),
        "nul-name": _feature(square, name="lot\x00"),
        "nul-kind": _feature(square, kind="zone\x00"),
        "nul-id": {**_feature(square), "id": "a\x00b"},
        "empty-name": _feature(square, name=" "),
        "bool-dwell": _feature(square, dwell_s=True),
        "float-dwell": _feature(square, dwell_s=1.5),
        "bow-tie": _feature(_polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]])),
        "unclosed": _feature(_polygon([[0, 0], [1, 0], [1, 1], [0, 1]])),
        "three-positions": _feature(_polygon([[0, 0], [1, 0], [0, 0]])),
        "collinear": _feature(_polygon([[0, 0], [1, 0], [2, 0], [0, 0]])),
        "duplicate-points": _feature(_polygon([[0, 0], [0, 0], [1, 0], [1, 1], [0, 0]])),
        "spike": _feature(_polygon([[0, 0], [2, 0], [1, 0], [1, 1], [0, 0]])),
        "tiny-area": _feature(_polygon([[0, 0], [1e-300, 0], [0, 1e-300], [0, 0]])),
        "denormal-area": _feature(_polygon([[0, 0], [5e-324, 0], [0, 5e-324], [0, 0]])),
        "hole-outside": _feature(_polygon(_square(), _square(lon=10))),
        "hole-touching": _feature(_polygon(_square(half=0.01), _square(half=0.01))),
        "world": _feature(_polygon([[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]])),
        "out-of-range": _feature(_polygon([[0, 0], [181, 0], [0, 91], [0, 0]])),
        "multi-overlap": _feature(
            {"type": "MultiPolygon", "coordinates": [[_square()], [_square(half=0.0005)]]}
        ),
        "multi-shared-edge": _feature(
            {"type": "MultiPolygon", "coordinates": [[_square()], [_square(lon=121.502)]]}
        ),
        "multi-empty": _feature({"type": "MultiPolygon", "coordinates": []}),
        "ring-10k": _feature(_polygon(_ring_of(10_000))),
        "ring-over-max-vertices": _feature(_polygon(_ring_of(100_001))),
        "coordinates-10k-zeros": _feature(_polygon([0] * 10_000)),
        "rings-10k-empty": _feature(_polygon(*([[]] * 10_000))),
        "mixed-coordinates": _feature(_polygon([[0, 0], "x", None, True, {"a": 1}])),
        "geometry-array": _feature([square]),
        "properties-array": {**_feature(square), "properties": [1]},
        "type-number": {**_feature(square), "type": 7},
        "geometry-collection": _feature({"type": "GeometryCollection", "geometries": [square]}),
        "line-string": _feature({"type": "LineString", "coordinates": _square()}),
        "id-differs": {**_feature(square), "id": "other"},
        "id-number": {**_feature(square), "id": 5},
        "props-depth-32": _feature(square, extra=json.loads(nest("1", 31))),
        "props-depth-33": _feature(square, extra=json.loads(nest("1", 33))),
        "props-deep-1000": _feature(square, extra=json.loads(nest("1", 900))),
        "collection-empty": {"type": "FeatureCollection", "features": []},
        "collection-features-object": {"type": "FeatureCollection", "features": {}},
        "collection-duplicate-ids": {
            "type": "FeatureCollection",
            "features": [{**_feature(square), "id": "a"}, {**_feature(square), "id": "a"}],
        },
        "collection-bad-middle": {
            "type": "FeatureCollection",
            "features": [
                {**_feature(square), "id": "a"},
                {**_feature(_polygon([[0, 0]])), "id": "b"},
                {**_feature(circle, radius_m=5), "id": "c"},
            ],
        },
        "collection-10k-non-objects": {"type": "FeatureCollection", "features": [1] * 10_000},
    }
    seeds += [(name, lenient(doc)) for name, doc in docs.items()]
    seeds.append(
        ("invalid-utf8-name", lenient(_feature(square, name="X")).replace(b'"X"', b'"\xff"'))
    )
    seeds.append(("nul-byte-raw", lenient(_feature(square)).replace(b"{", b"{\x00", 1)))
    return seeds


def hostile_loan_seeds() -> list[Seed]:
    """Loan documents built to break the loan parser."""
    good: dict[str, object] = {
        "loan_id": "L-1",
        "vin": "LSVAB4182E2123456",
        "device_ids": ["trk-1"],
        "zone_ids": ["home"],
        "status": "active",
        "principal": 50000,
        "vehicle": {"make": "SAIC", "model": "MG5", "year": 2022, "mileage_km": 1, "value": 2},
    }
    deep = nest("0", DEEP)
    text = {
        "deep-vin": f'{{"vin": {deep}}}',
        "deep-status": f'{{"vin":"LSVAB4182E2123456","device_ids":["a"],"status":{deep}}}',
        "deep-year": '{"vin":"LSVAB4182E2123456","device_ids":["a"],"vehicle":{"year":'
        + deep
        + "}}",
        "deep-loan-id": f'[{{"loan_id": {deep}}}]',
        "deep-document": nest("{}", DEEP),
        "nan-principal": '{"vin":"LSVAB4182E2123456","device_ids":["a"],"principal":NaN}',
        "infinity-value": '{"vin":"LSVAB4182E2123456","device_ids":["a"],'
        '"vehicle":{"value":Infinity}}',
        "overflow-principal": '{"vin":"LSVAB4182E2123456","device_ids":["a"],"principal":1e999}',
        "huge-int-principal": '{"vin":"LSVAB4182E2123456","device_ids":["a"],"principal":'
        + HUGE_INT
        + "}",
        "huge-int-year": '{"vin":"LSVAB4182E2123456","device_ids":["a"],"vehicle":{"year":-'
        + HUGE_INT
        + "}}",
    }
    seeds: list[Seed] = [(name, body.encode()) for name, body in text.items()]
    docs: dict[str, object] = {
        "good": good,
        "good-array": [good, {**good, "loan_id": "L-2", "device_ids": ["trk-2"]}],
        "status-list": {**good, "status": []},
        "status-object": {**good, "status": {}},
        "status-number": {**good, "status": 1},
        "status-null": {**good, "status": None},
        "vin-lowercase": {**good, "vin": "lsvab4182e2123456"},
        "vin-ioq": {**good, "vin": "IOQAB4182E2123456"},
        "vin-number": {**good, "vin": 12345678901234567},
        "vin-nul": {**good, "vin": "LSVAB4182E212345\x00"},
        "devices-empty": {**good, "device_ids": []},
        "devices-twice": {**good, "device_ids": ["a", "a"]},
        "devices-10k": {**good, "device_ids": [f"t{i}" for i in range(10_000)]},
        "devices-mixed": {**good, "device_ids": ["a", 1, None]},
        "devices-65-chars": {**good, "device_ids": ["a" * 65]},
        "devices-string": {**good, "device_ids": "trk-1"},
        "zones-bad": {**good, "zone_ids": ["a b"]},
        "principal-negative-zero": {**good, "principal": -0.0},
        "principal-string": {**good, "principal": "100"},
        "principal-bool": {**good, "principal": True},
        "principal-max": {**good, "principal": 1.7976931348623157e308},
        "year-bool": {**good, "vehicle": {"year": True}},
        "year-float": {**good, "vehicle": {"year": 2020.0}},
        "year-edges": {**good, "vehicle": {"year": 1899}},
        "vehicle-array": {**good, "vehicle": [1]},
        "make-number": {**good, "vehicle": {"make": 5}},
        "loan-id-bad": {**good, "loan_id": "a b"},
        "array-twice": [good, good],
        "array-mixed": [good, 1, None, "x", []],
        "array-10k-non-objects": [1] * 10_000,
    }
    seeds += [(name, lenient(doc)) for name, doc in docs.items()]
    return seeds


def seeds_for(target: str) -> list[Seed]:
    """Every seed of a target: real first, then hostile."""
    if target == "decode":
        return real_decode_seeds() + hostile_decode_seeds()
    if target == "fence":
        return real_fence_seeds() + hostile_fence_seeds()
    if target == "loan":
        return real_loan_seeds() + hostile_loan_seeds()
    msg = f"unknown target {target!r}"
    raise ValueError(msg)


def write_corpus(target: str, root: Path = CORPUS) -> list[Path]:
    """Write a target's seeds as files (replacing those of the same name); the written paths."""
    folder = root / target
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, data in seeds_for(target):
        if len(data) > MAX_SEED_FILE_BYTES:
            continue
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written
