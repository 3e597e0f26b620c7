"""One generated file: Pythia batches → truth → detector → NanoAOD, written atomically, cached by settings.

A file is the unit of work, of caching and of parallelism. Its name carries a hash of everything
that determines its content (sample settings, seed, event count, generator version), so a finished
file is never regenerated for the same settings and a changed setting never reuses a stale file.
Each file has its own seeds, derived from (global seed, sample, file index) with numpy's
SeedSequence: Pythia's and the detector's random streams are independent and reproducible. The
branches added for the AGC analysis (version 3: CSVv2, lepton ip3d/sip3d) draw from a third child of
the same sequence, so every branch that existed before has the values it had in version 2. Likewise the
pile-up labels of version 4 (``Pileup_nTrueInt``, ``Pileup_nPU``, ``PV_npvs``, ``fixedGridRhoFastjetAll``;
``pileup.py``) draw from a fourth child: every other branch has its version-3 values.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zprime_grad import atomic
from zprime_grad.config import SampleConfig

# Bump when the detector model or the NanoAOD layout changes: it invalidates every cached file.
GENERATOR_VERSION = "4"
EXTRA_STREAM = 2  # spawn key of the AGC quantities' stream (0: Pythia, 1: the detector)
PILEUP_STREAM = 3  # spawn key of the pile-up labels' stream (version 4)


@dataclass(frozen=True)
class FileJob:
    sample: str
    config: SampleConfig
    file_index: int
    n_events: int
    seed: int
    sqrt_s: float
    underlying_event: bool
    batch_size: int
    out_dir: str

    @property
    def key(self) -> str:
        payload = {**asdict(self), "config": self.config.model_dump(mode="json"), "version": GENERATOR_VERSION}
        payload.pop("out_dir")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / self.sample / f"{self.sample}_{self.file_index:03d}_{self.key}.root"

    @property
    def summary_path(self) -> Path:
        return self.path.with_suffix(".json")

    def _entropy(self) -> list[int]:
        return [self.seed, zlib.crc32(self.sample.encode()), self.file_index]

    def seeds(self) -> tuple[int, np.random.SeedSequence]:
        """(Pythia seed, detector seed sequence) for this file."""
        pythia_child, detector_child = np.random.SeedSequence(self._entropy()).spawn(2)
        return int(pythia_child.generate_state(1)[0] % 900_000_000) + 1, detector_child

    def extra_seed(self) -> np.random.SeedSequence:
        """The seed sequence of the branches added after version 2 (independent of ``seeds()``)."""
        return np.random.SeedSequence(self._entropy(), spawn_key=(EXTRA_STREAM,))

    def pileup_seed(self) -> np.random.SeedSequence:
        """The seed sequence of the pile-up labels (version 4; independent of the others)."""
        return np.random.SeedSequence(self._entropy(), spawn_key=(PILEUP_STREAM,))


def cached_summary(job: FileJob) -> dict | None:
    """The summary of a finished file with these exact settings, or None."""
    if job.path.exists() and job.summary_path.exists():
        return json.loads(job.summary_path.read_text())
    return None


def generate_file(job: FileJob, progress=None) -> dict:
    """Generate one file (in a worker process); returns its summary (events, Σw, σ, timing)."""
    # Imported here: the heavy generator stack loads only in the worker processes.
    import pythia8mc

    from zprime_grad.generate import nanoaod, truth
    from zprime_grad.generate.samples import pythia_setup

    cached = cached_summary(job)
    if cached is not None:
        if progress is not None:
            progress.put((job.sample, job.n_events))
        return cached

    pythia_seed, detector_seed = job.seeds()
    setup = pythia_setup(
        job.config, sqrt_s=job.sqrt_s, underlying_event=job.underlying_event,
        seed=pythia_seed, file_index=job.file_index,
    )
    pythia = pythia8mc.Pythia("", False)
    for line in setup.settings:
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected setting {line!r} for sample {job.sample}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for sample {job.sample}")
    charge_of = pythia.particleData.charge
    rng = np.random.default_rng(detector_seed)
    extra_rng = np.random.default_rng(job.extra_seed())
    pileup_rng = np.random.default_rng(job.pileup_seed())

    start, batches, done = time.perf_counter(), [], 0
    first_event = job.file_index * 10_000_000
    while done < job.n_events:
        n = min(job.batch_size, job.n_events - done)
        batch = pythia.nextBatch(n)
        if len(batch) == 0:
            raise RuntimeError(f"Pythia produced no events for sample {job.sample}")
        batches.append(nanoaod.reconstruct(truth.from_batch(batch, charge_of), rng, first_event + done,
                                              extra_rng=extra_rng, pileup_rng=pileup_rng))
        done += len(batch)
        if progress is not None:
            progress.put((job.sample, len(batch)))
    events = nanoaod.concatenate(batches)
    weights = events["genWeight"].astype(np.float64)
    runs = {
        "run": np.ones(1, np.uint32),
        "genEventCount": np.array([done], np.int64),
        "genEventSumw": np.array([weights.sum()]),
        "genEventSumw2": np.array([(weights**2).sum()]),
    }
    job.path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(job.path) as tmp:
        nanoaod.write(tmp, events, runs)
    summary = {
        "sample": job.sample,
        "file": str(job.path),
        "nevents": done,
        "sumw": float(runs["genEventSumw"][0]),
        "sumw2": float(runs["genEventSumw2"][0]),
        "sigma_gen_pb": float(pythia.infoPython().sigmaGen() * 1e9),
        "sigma_err_pb": float(pythia.infoPython().sigmaErr() * 1e9),
        "xsec_pb": setup.xsec_pb,
        "k_factor": setup.k_factor,
        "seconds": time.perf_counter() - start,
        "key": job.key,
    }
    atomic.write_json(job.summary_path, summary)
    return summary
