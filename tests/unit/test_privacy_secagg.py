"""The secure-aggregation protocol in memory: exact sums with dropouts, thresholds, tampering, replay, secrecy."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedpact.privacy import shamir
from fedpact.privacy.channel import ChannelError
from fedpact.privacy.quantize import FixedPoint
from fedpact.privacy.secagg import (
    MessageRejected,
    RoundAborted,
    SecAggClient,
    SecAggError,
    SecAggParams,
    SecAggServer,
)

Hook = Callable[[str, dict[str, Any]], dict[str, Any]]


class Sim:
    """One round: every message the server receives is also kept, serialised, in ``server_view``."""

    def __init__(self, n: int = 5, threshold: int = 3, length: int = 64, round_id: str = "round-1", **kw: Any) -> None:
        self.names = [f"p{i:02d}" for i in range(n)]
        self.params = SecAggParams("task-x", round_id, tuple(self.names), threshold, length, **kw)
        self.server = SecAggServer(self.params)
        self.clients = {u: SecAggClient(self.params, u) for u in self.names}
        rng = np.random.default_rng(7)
        self.inputs = {u: rng.integers(0, 2**32, length, dtype=np.uint32) for u in self.names}
        self.server_view: list[bytes] = []

    def _send(self, u: str, msg: dict[str, Any], vec: np.ndarray | None = None) -> None:
        self.server_view.append(json.dumps(msg).encode())
        if vec is not None:
            self.server_view.append(vec.tobytes())
        self.server.receive(u, msg, vec)

    def run(self, drop: dict[str, set[str]] | None = None, tamper: Hook | None = None) -> np.ndarray:
        """``drop[step]``: who goes silent at that step (advertise, share, masked, unmask)."""
        drop = {k: set(v) for k, v in (drop or {}).items()}
        gone: set[str] = set()

        def alive(step: str) -> list[str]:
            gone.update(drop.get(step, set()))
            return [u for u in self.names if u not in gone]

        for u in alive("advertise"):
            self._send(u, self.clients[u].advertise_keys())
        roster = self.server.roster()
        for u in alive("share"):
            self._send(u, self.clients[u].share_keys(roster))
        forwards = self.server.forward_shares()
        for u in alive("masked"):
            fwd = tamper(u, forwards[u]) if tamper else forwards[u]
            meta, y = self.clients[u].masked_input(fwd, self.inputs[u])
            self._send(u, meta, y)
        request = self.server.unmask_request()
        for u in alive("unmask"):
            self._send(u, self.clients[u].unmask(request))
        return self.server.finish()

    def plain_sum(self, names: list[str]) -> np.ndarray:
        total = np.zeros(self.params.vector_length, dtype=np.uint32)
        for u in names:
            total += self.inputs[u]
        return total


def test_one_participant_dropping_after_its_masked_input_still_gives_the_exact_sum() -> None:
    sim = Sim(5, 3)
    total = sim.run(drop={"unmask": {"p02"}})
    assert sim.server.u3 == sim.names  # p02's input counts: its self-mask comes from others' shares
    np.testing.assert_array_equal(total, sim.plain_sum(sim.names))


def test_weighted_fedavg_through_secure_aggregation_matches_the_plain_average() -> None:
    rng = np.random.default_rng(3)
    n, dim = 5, 300
    fp = FixedPoint(clip=1.0, bits=32, max_weight=1000, max_summands=n)
    sim = Sim(n, 3, length=dim + 1)
    updates = {u: rng.normal(0, 0.3, dim) for u in sim.names}
    weights = {u: int(w) for u, w in zip(sim.names, rng.integers(50, 1000, n))}
    sim.inputs = {u: fp.encode_weighted(updates[u], weights[u], rng) for u in sim.names}
    total = sim.run(drop={"unmask": {"p04"}})
    np.testing.assert_array_equal(total, sim.plain_sum(sim.names))  # exactly the plain quantised sum
    avg, tw = fp.decode_weighted_sum(total)
    assert tw == sum(weights.values())
    expected = sum(weights[u] * np.clip(updates[u], -1, 1) for u in sim.names) / tw
    assert np.abs(avg - expected).max() <= fp.average_error_bound(n, tw)


def test_participants_dropping_after_share_keys_are_left_out_and_their_masks_removed() -> None:
    sim = Sim(6, 3)
    total = sim.run(drop={"masked": {"p01", "p04"}})
    survivors = [u for u in sim.names if u not in {"p01", "p04"}]
    assert sim.server.u3 == survivors
    np.testing.assert_array_equal(total, sim.plain_sum(survivors))


def test_dropouts_at_every_step_together() -> None:
    sim = Sim(8, 4)
    total = sim.run(drop={"share": {"p07"}, "masked": {"p03"}, "unmask": {"p05"}})
    survivors = [u for u in sim.names if u not in {"p07", "p03"}]
    np.testing.assert_array_equal(total, sim.plain_sum(survivors))


def test_sparse_graph_with_dropouts() -> None:
    sim = Sim(30, 16, length=32, sparse=True, degree=8)
    assert all(len(sim.params.neighbours(u)) == 8 for u in sim.names)
    total = sim.run(drop={"masked": {"p03", "p17"}, "unmask": {"p09"}})
    survivors = [u for u in sim.names if u not in {"p03", "p17"}]
    np.testing.assert_array_equal(total, sim.plain_sum(survivors))


@pytest.mark.parametrize("step,gone,where", [
    ("advertise", {"p00", "p01", "p02"}, "after AdvertiseKeys"),
    ("share", {"p00", "p01", "p02"}, "after ShareKeys"),
    ("masked", {"p00", "p01", "p02"}, "after MaskedInputCollection"),
    ("unmask", {"p00", "p01", "p02"}, "during Unmasking"),
])
def test_below_threshold_the_round_fails_with_a_clear_reason(step: str, gone: set[str], where: str) -> None:
    sim = Sim(5, 3)
    with pytest.raises(RoundAborted) as exc:
        sim.run(drop={step: gone})
    text = str(exc.value)
    assert where in text and "only 2 of 5" in text and "threshold of 3" in text and "nothing" in text
    assert sim.server.step == "aborted"


def test_too_few_shares_in_a_neighbourhood_fails_cleanly() -> None:
    sim = Sim(12, 7, sparse=True, degree=4)  # holders: 5, per-secret threshold ceil(7*5/12) = 3
    victim = "p00"
    neighbours = sorted(sim.params.neighbours(victim))
    with pytest.raises(RoundAborted, match=f"{victim}'s self-mask seed has 2 share"):
        sim.run(drop={"unmask": {victim, *neighbours[:2]}})


def test_clients_refuse_rosters_and_requests_below_threshold() -> None:
    sim = Sim(5, 3)
    for u in sim.names:
        sim.server.receive(u, sim.clients[u].advertise_keys())
    roster = sim.server.roster()
    small = {**roster, "keys": {u: roster["keys"][u] for u in sim.names[:2]}}
    with pytest.raises((RoundAborted, MessageRejected)):
        sim.clients["p00"].share_keys(small)
    for u in sim.names:
        sim.server.receive(u, sim.clients[u].share_keys(roster))
    fwd = sim.server.forward_shares()
    for u in sim.names:
        meta, y = sim.clients[u].masked_input(fwd[u], sim.inputs[u])
        sim.server.receive(u, meta, y)
    request = sim.server.unmask_request()
    forged = {**request, "survivors": ["p00", "p01"]}  # a server trying to unmask with too few inputs
    with pytest.raises(RoundAborted, match="fewer than the threshold"):
        sim.clients["p00"].unmask(forged)


def test_a_participant_answers_only_one_unmasking_request() -> None:
    sim = Sim(5, 3)
    sim.run()
    request = {"protocol": "fedpact-secagg/1", "task": "task-x", "round_id": "round-1", "step": "unmask",
               "sender": "aggregator", "survivors": ["p00", "p01", "p02"]}
    with pytest.raises(MessageRejected, match="already answered"):
        sim.clients["p00"].unmask(request)  # asking again with p03, p04 "dropped" would reveal their keys too


def test_tampered_share_ciphertext_is_rejected() -> None:
    sim = Sim(5, 3)

    def tamper(u: str, fwd: dict[str, Any]) -> dict[str, Any]:
        if u != "p03":
            return fwd
        ct = bytearray(base64.b64decode(fwd["ciphertexts"]["p01"]))
        ct[20] ^= 0x01
        return {**fwd, "ciphertexts": {**fwd["ciphertexts"], "p01": base64.b64encode(bytes(ct)).decode()}}

    with pytest.raises(ChannelError, match="from 'p01' to 'p03' failed authentication"):
        sim.run(tamper=tamper)


def test_share_ciphertext_redirected_to_another_participant_is_rejected() -> None:
    sim = Sim(5, 3)

    def redirect(u: str, fwd: dict[str, Any]) -> dict[str, Any]:
        if u != "p03":
            return fwd
        other = sim.server.ciphertexts["p01"]["p02"]  # p01's share for p02, handed to p03
        return {**fwd, "ciphertexts": {**fwd["ciphertexts"], "p01": other}}

    with pytest.raises(ChannelError):
        sim.run(tamper=redirect)


def test_messages_replayed_from_another_round_or_step_are_rejected() -> None:
    old = Sim(5, 3, round_id="round-1")
    old_adverts = {u: old.clients[u].advertise_keys() for u in old.names}
    for u, msg in old_adverts.items():
        old.server.receive(u, msg)
    old_roster = old.server.roster()
    old_shares = {u: old.clients[u].share_keys(old_roster) for u in old.names}

    new = Sim(5, 3, round_id="round-2")
    with pytest.raises(MessageRejected, match="from round 'round-1' replayed into round 'round-2'"):
        new.server.receive("p00", old_adverts["p00"])
    for u in new.names:
        new.server.receive(u, new.clients[u].advertise_keys())
    with pytest.raises(MessageRejected, match="replayed"):
        new.clients["p00"].share_keys(old_roster)  # an old roster handed to a client
    roster = new.server.roster()
    with pytest.raises(MessageRejected, match="replayed into round"):
        new.server.receive("p01", old_shares["p01"])
    with pytest.raises(MessageRejected, match="step 'advertise_keys' received during step 'share_keys'"):
        new.server.receive("p01", {**old_adverts["p01"], "round_id": "round-2"})  # a late advert, wrong step
    # the same ciphertext with the envelope rewritten to the new round still fails: the AD binds the round
    for u in new.names:
        msg = new.clients[u].share_keys(roster)
        if u == "p01":
            msg = {**msg, "ciphertexts": {**msg["ciphertexts"], "p03": old_shares["p01"]["ciphertexts"]["p03"]}}
        new.server.receive(u, msg)
    fwd = new.server.forward_shares()
    with pytest.raises(ChannelError, match="replayed"):
        new.clients["p03"].masked_input(fwd["p03"], new.inputs["p03"])


def test_spoofed_sender_and_duplicates() -> None:
    sim = Sim(5, 3)
    msg = sim.clients["p00"].advertise_keys()
    with pytest.raises(MessageRejected, match="claims to come from 'p00' but was sent by 'p01'"):
        sim.server.receive("p01", msg)
    assert sim.server.receive("p00", msg) is True
    assert sim.server.receive("p00", msg) is False  # at-least-once delivery: duplicate ignored
    with pytest.raises(MessageRejected, match="not a participant"):
        sim.server.receive("mallory", msg)


def test_corrupt_revealed_share_is_detected() -> None:
    sim = Sim(5, 3)
    for u in sim.names:
        sim.server.receive(u, sim.clients[u].advertise_keys())
    roster = sim.server.roster()
    for u in sim.names:
        sim.server.receive(u, sim.clients[u].share_keys(roster))
    fwd = sim.server.forward_shares()
    for u in sim.names[:4]:  # p04 drops after ShareKeys: its mask key must be rebuilt
        meta, y = sim.clients[u].masked_input(fwd[u], sim.inputs[u])
        sim.server.receive(u, meta, y)
    request = sim.server.unmask_request()
    for u in sim.names[:4]:
        reply = sim.clients[u].unmask(request)
        if u == "p00":
            bad = bytearray(base64.b64decode(reply["sk_shares"]["p04"]))
            bad[-1] ^= 1
            reply["sk_shares"]["p04"] = base64.b64encode(bytes(bad)).decode()
        sim.server.receive(u, reply)
    with pytest.raises(RoundAborted, match="p04's mask key could not be reconstructed.*corrupt"):
        sim.server.finish()


def test_the_server_view_reveals_no_individual_input() -> None:
    n, length = 5, 20_000
    sim = Sim(n, 3, length=length)
    fp = FixedPoint(clip=1.0, max_weight=100, max_summands=n)
    rng = np.random.default_rng(11)
    # Very structured inputs (small values, mostly zeros): the easiest to spot if leaked.
    updates = {u: np.where(rng.random(length - 1) < 0.9, 0.0, rng.normal(0, 0.01, length - 1)) for u in sim.names}
    sim.inputs = {u: fp.encode_weighted(updates[u], 60 + i, rng) for i, u in enumerate(sim.names)}
    total = sim.run(drop={"unmask": {"p01"}})
    np.testing.assert_array_equal(total, sim.plain_sum(sim.names))

    masked = {u: np.frombuffer(sim.server_view[i], dtype=np.uint32)
              for u, i in zip(sim.names, [k for k, b in enumerate(sim.server_view) if len(b) == 4 * length])}
    assert len(masked) == n
    for u in sim.names:
        y, x = masked[u], sim.inputs[u]
        # 1. uniform: chi-square of the top 4 bits over 16 bins (15 dof; 55 is p ~ 1e-6)
        counts = np.bincount((y >> 28).astype(np.int64), minlength=16)
        chi2 = float(((counts - length / 16) ** 2 / (length / 16)).sum())
        assert chi2 < 55, (u, chi2)
        # 2. uncorrelated with the true quantised input (as signed values) and with every other input
        for v in sim.names:
            xv = sim.inputs[v].view(np.int32).astype(np.float64)
            r = np.corrcoef(y.view(np.int32).astype(np.float64), xv)[0, 1]
            assert abs(r) < 0.05, (u, v, r)
        # 3. the input's bytes appear nowhere in what the server received (8-byte windows)
        xb = x.tobytes()
        nonzero = [xb[i : i + 8] for i in range(0, len(xb) - 8, 8) if xb[i : i + 8] != bytes(8)][:200]
        assert nonzero
        for blob in sim.server_view:
            assert not any(w in blob for w in nonzero), u
    # 4. with t-1 = 2 genuine shares of p00's self-mask seed (and a guess for the third) the
    #    server's reconstruction is some other seed, and unmasking with it does not give x_p00
    from fedpact.privacy.prg import add_mask

    genuine = [shamir.Share.from_bytes(sim.params.index(h), sim.server._unmask[h][0]["p00"]) for h in ("p00", "p02")]
    for guess_value in (0, 1, 2**200):
        fake = shamir.combine_int([*genuine, shamir.Share(sim.params.index("p04"), guess_value)], 3)
        fake_seed = (fake % 2**256).to_bytes(32, "big")
        unmasked = add_mask(masked["p00"].copy(), fake_seed, -1)
        assert not np.array_equal(unmasked, sim.inputs["p00"])
        assert abs(np.corrcoef(unmasked.view(np.int32).astype(float),
                               sim.inputs["p00"].view(np.int32).astype(float))[0, 1]) < 0.05


def test_parameter_validation() -> None:
    with pytest.raises(SecAggError, match="at least 2"):
        SecAggParams("t", "r", ("a",), 1, 4)
    with pytest.raises(SecAggError, match="threshold must be between 1 and 3"):
        SecAggParams("t", "r", ("a", "b", "c"), 4, 4)
    p = SecAggParams("t", "r", ("c", "a", "b"), 2, 4, sparse=True, degree=2)
    assert p.participants == ("a", "b", "c") and SecAggParams.from_dict(p.to_dict()) == p
    with pytest.raises(SecAggError, match="not a participant"):
        SecAggClient(p, "zed")
