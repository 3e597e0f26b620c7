"""The Session's chunks: resident on a cluster in the order of a skim directory, and a cluster skim
persisted through fsspec (``skim.persist``) that the next session reads back instead of skimming."""

from __future__ import annotations

import json

from zprime_grad.chunks import DaskChunks, LocalChunks
from zprime_grad.config import override
from zprime_grad.skim.resident import chunk_digest
from zprime_grad.stages.session import Session

CHUNKSIZE = 400


def digests(client, chunks: DaskChunks) -> list[str]:
    return client.gather(client.map(chunk_digest, chunks.all, pure=False))


def test_a_persisted_cluster_skim_is_reused_bit_identically_and_only_when_complete(generated, client, tmp_path):
    store = tmp_path / "store"
    config = override(generated.config, skim={"chunksize": CHUNKSIZE, "persist": f"file://{store}"})
    with Session(config) as local:  # in-process: the skim directory, in its order
        want = [chunk_digest(c) for c in local.skim(generated.fileset, tmp_path / "local").all]

    with Session(config, client=client) as session:
        first = session.skim(generated.fileset, tmp_path / "one")
        assert digests(client, first) == want  # resident, in the skim directory's order
    report = json.loads((tmp_path / "one" / "skim.json").read_text())
    assert report["resident"] and report["persisted"] == f"file://{store}/skim.json"
    persisted = json.loads((store / "skim.json").read_text())
    assert len(persisted["columns"]) == len(want) and all((store / c["path"]).is_file() for c in persisted["columns"])

    with Session(config, client=client) as session:  # the same config and inputs: read, not skimmed
        again = session.skim(generated.fileset, tmp_path / "two")
        assert digests(client, again) == want
    assert json.loads((tmp_path / "two" / "skim.json").read_text())["reused_from"] == f"file://{store}"

    (store / persisted["columns"][0]["path"]).unlink()  # incomplete: skimmed again, and persisted again
    with Session(config, client=client) as session:
        fresh = session.skim(generated.fileset, tmp_path / "three")
        assert digests(client, fresh) == want
    assert "reused_from" not in json.loads((tmp_path / "three" / "skim.json").read_text())
    assert (store / persisted["columns"][0]["path"]).is_file()

    other = override(config, skim={"chunksize": CHUNKSIZE * 2})  # another skim: never the persisted one
    with Session(other, client=client) as session:
        session.skim(generated.fileset, tmp_path / "four")
    assert "reused_from" not in json.loads((tmp_path / "four" / "skim.json").read_text())
    assert client.status == "running"  # a session leaves a client it was given open


def test_local_chunks_reduce_over_every_chunk_and_map_reduce_over_the_mc(generated, tmp_path):
    with Session(override(generated.config, skim={"chunksize": CHUNKSIZE})) as session:
        chunks = session.skim(generated.fileset, tmp_path / "skim")
        assert isinstance(chunks, LocalChunks)
        assert any(c.is_data for c in chunks.all) and not any(c.is_data for c in chunks.chunks)
        counted = chunks.reduce(lambda c: {"events": c.n_events, "data": c.n_events * c.is_data})
        assert counted["events"] == sum(c.n_events for c in chunks.all) and counted["data"] > 0
        assert [d["key"] for d in chunks.descriptions()] == [list(map(str, c.key)) for c in chunks.chunks]
    assert chunks.all == []  # closed with the session
