"""gNMI notifications -> LinkReading: the pure merge of OpenConfig leaves (any encoding),
checked against the values put in."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.agent.sources.gnmi import GnmiState, parse_path, port_speed, typed_value
from collector.proto.openconfig.gnmi import gnmi_pb2 as g

U64 = st.integers(0, 2**64 - 1)
NAMES = st.sampled_from(["et-0/0/1", "Ethernet1", "xe-1/2/3:0", "eth 0"])
COUNTERS = (
    "in-octets",
    "out-octets",
    "in-unicast-pkts",
    "in-multicast-pkts",
    "in-broadcast-pkts",
    "out-pkts",
    "in-errors",
    "out-errors",
    "in-discards",
    "out-discards",
    "last-clear",
)


def elem(elem_name: str, **keys: str) -> g.PathElem:
    return g.PathElem(name=elem_name, key=keys)


def counters_notification(link: str, values: dict[str, int], t: int, how: str) -> g.Notification:
    """The same counters as the encodings targets use: proto scalars per leaf, one JSON_IETF
    container (uint64 as strings, module-prefixed keys), or a JSON container with numbers."""
    if how == "proto":
        prefix = g.Path(
            origin="openconfig",
            elem=[
                elem("openconfig-interfaces:interfaces"),
                elem("interface", name=link),
                elem("state"),
                elem("counters"),
            ],
        )
        ups = [g.Update(path=g.Path(elem=[elem(k)]), val=g.TypedValue(uint_val=v)) for k, v in values.items()]
        return g.Notification(timestamp=t, prefix=prefix, update=ups)
    if how == "json_ietf":
        body = {f"openconfig-interfaces:{k}": str(v) for k, v in values.items()}
        val = g.TypedValue(json_ietf_val=json.dumps(body).encode())
    else:
        val = g.TypedValue(json_val=json.dumps(values).encode())
    path = g.Path(elem=[elem("interfaces"), elem("interface", name=link), elem("state"), elem("counters")])
    return g.Notification(timestamp=t, update=[g.Update(path=path, val=val)])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(NAMES, st.fixed_dictionaries({k: U64 for k in COUNTERS}), min_size=1, max_size=3),
    st.integers(1, 2**62),
    st.sampled_from(["proto", "json_ietf", "json"]),
)
def test_counters_map_exactly_in_every_encoding(links: dict[str, dict[str, int]], t: int, how: str) -> None:
    state = GnmiState()
    for link, values in links.items():
        state.apply(counters_notification(link, values, t, how))
    out = {r.name: r for r in state.readings(prefix="r1:")}
    assert set(out) == {f"r1:{k}" for k in links}
    for link, v in links.items():
        r = out[f"r1:{link}"]
        assert (r.in_octets, r.out_octets) == (v["in-octets"], v["out-octets"])
        assert (
            r.in_packets == (v["in-unicast-pkts"] + v["in-multicast-pkts"] + v["in-broadcast-pkts"]) % 2**64
        )
        assert r.out_packets == v["out-pkts"]
        assert (r.in_errors, r.out_errors, r.in_discards, r.out_discards) == (
            v["in-errors"],
            v["out-errors"],
            v["in-discards"],
            v["out-discards"],
        )
        assert r.counter_start_unix_nano == v["last-clear"]
        assert r.counter_bits == 64
        assert r.time_unix_nano == t
    assert state.readings() == []  # nothing new: nothing read twice


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-40, 10), st.floats(-40, 10), st.floats(0, 200)), min_size=1, max_size=8),
    st.floats(1e-15, 1e-2),
    st.floats(0, 60),
    st.booleans(),
)
def test_optics_take_the_worst_lane_and_land_on_their_interface(
    lanes: list[tuple[float, float, float]], ber: float, osnr: float, mapped: bool
) -> None:
    state = GnmiState(components={"och-9": "et-0/0/9"})
    t = 10**18
    if mapped:
        state.apply(
            g.Notification(
                timestamp=t,
                prefix=g.Path(elem=[elem("interfaces"), elem("interface", name="et-0/0/9")]),
                update=[
                    g.Update(
                        path=g.Path(elem=[elem("state"), elem("transceiver")]),
                        val=g.TypedValue(string_val="xcvr-9"),
                    )
                ],
            )
        )
    ups = []
    for i, (rx, tx, bias) in enumerate(lanes):
        for leaf, v in (("input-power", rx), ("output-power", tx), ("laser-bias-current", bias)):
            ups.append(
                g.Update(
                    path=g.Path(
                        elem=[
                            elem("transceiver"),
                            elem("physical-channels"),
                            elem("channel", index=str(i)),
                            elem("state"),
                            elem(leaf),
                            elem("instant"),
                        ]
                    ),
                    val=g.TypedValue(double_val=v),
                )
            )
    state.apply(
        g.Notification(
            timestamp=t,
            prefix=g.Path(elem=[elem("components"), elem("component", name="xcvr-9")]),
            update=ups,
        )
    )
    state.apply(
        g.Notification(
            timestamp=t,
            prefix=g.Path(
                elem=[
                    elem("components"),
                    elem("component", name="och-9"),
                    elem("optical-channel"),
                    elem("state"),
                ]
            ),
            update=[
                g.Update(
                    path=g.Path(elem=[elem("pre-fec-ber"), elem("instant")]), val=g.TypedValue(double_val=ber)
                ),
                g.Update(
                    path=g.Path(elem=[elem("osnr"), elem("instant")]),
                    val=g.TypedValue(decimal_val=g.Decimal64(digits=round(osnr * 100), precision=2)),
                ),
            ],
        )
    )
    out = {r.name: r for r in state.readings()}
    r = out["et-0/0/9"]
    assert r.media == "optical"
    assert r.prefec_ber == ber
    assert r.osnr_db == round(osnr * 100) / 100
    if mapped:
        assert set(out) == {"et-0/0/9"}
        assert r.rx_power_dbm == min(x[0] for x in lanes)
        assert r.tx_power_dbm == min(x[1] for x in lanes)
        assert r.laser_bias_amperes == max(x[2] for x in lanes) / 1000
    else:  # the transceiver is not related to an interface: a link of its own
        assert set(out) == {"et-0/0/9", "xcvr-9"}
        assert r.rx_power_dbm is None
        assert out["xcvr-9"].rx_power_dbm == min(x[0] for x in lanes)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=True),
        st.integers(-(2**70), -1),
        st.integers(2**64, 2**70),
        st.text(max_size=5),
        st.booleans(),
    )
)
def test_a_bad_counter_value_is_counted_not_sent(v: Any) -> None:
    state = GnmiState()
    if isinstance(v, bool):
        val = g.TypedValue(bool_val=v)
    elif isinstance(v, float):
        val = g.TypedValue(double_val=v)
    elif isinstance(v, int):
        val = g.TypedValue(json_ietf_val=json.dumps({"in-octets": str(v)}).encode())
    else:
        if v.isascii() and v.isdigit():
            v = "-" + v  # a valid counter string is not a bad value
        val = g.TypedValue(string_val=v)  # also unicode digits such as "²", which int() refuses
    path = g.Path(
        elem=[elem("interfaces"), elem("interface", name="e1"), elem("state"), elem("counters")]
        + ([] if val.HasField("json_ietf_val") else [elem("in-octets")])
    )
    state.apply(g.Notification(timestamp=1, update=[g.Update(path=path, val=val)]))
    assert state.readings() == []
    assert state.rejected == {"bad_counter": 1}


def test_port_speeds_and_paths() -> None:
    assert port_speed("openconfig-if-ethernet:SPEED_400GB") == 400 * 10**9 // 8
    assert port_speed("SPEED_2500MB") == 2_500 * 10**6 // 8
    assert port_speed("SPEED_UNKNOWN") is None
    assert parse_path("/components/component[name=OCH-1/1]/state") == (
        ("components", ()),
        ("component", (("name", "OCH-1/1"),)),
        ("state", ()),
    )
    assert typed_value(g.TypedValue(decimal_val=g.Decimal64(digits=-312, precision=2))) == -3.12
