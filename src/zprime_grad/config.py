"""The analysis configuration: one YAML file, parsed into typed, frozen models.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt or unknown field is an error
that names the field and the file, never a silently ignored setting (the reference analysis lost its
``processor`` key that way). Sections belong to the stage that reads them; a stage never reads another
stage's section.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_serializer,
                      model_validator)

from zprime_grad.limits import (CHUNKSIZE_MAX, CLUSTER_WORKERS_MAX, EPOCHS_MAX, EVENTS_MAX, FLOAT32_MAX,
                                POOL_WORKERS_MAX, SEED_MAX, STEP_MAX, XSEC_MAX_PB)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "zprime.yaml"


class ConfigError(ValueError):
    """An invalid configuration; the message names the file and the field."""


class Strict(BaseModel):
    """Every section: unknown fields are errors, numbers must be finite (no NaN or infinity anywhere, dict
    values and tuple elements included), booleans must be booleans (``StrictBool``: no "false" string)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def at(field: str, message: str) -> ValueError:
    """A model validator's error about one of its fields: `_format_errors` names ``section.field``."""
    return ValueError(f"@{field}: {message}")


# --------------------------------------------------------------------------------------------- generate
NOMINAL_VARIATION = "nominal"
_VARIATION_DEFAULTS = {"variation": NOMINAL_VARIATION, "scale_multiplier": 1.0}
PYTHIA_MULT_FAC = (0.1, 10.0)  # the range Pythia allows for its renormMultFac / factorMultFac (scale^2 factors)


class SampleConfig(Strict):
    """One generated Monte Carlo sample (a coffea dataset)."""

    kind: Literal["zprime", "ttbar", "wjets", "single_top"]
    process: str | None = Field(None, description="process name in the fit; defaults to the sample name")
    xsec_pb: float | None = Field(
        None,
        gt=0, le=XSEC_MAX_PB,
        description="cross section before the forced decays in pb; None: Pythia's own sigma x k_factor",
    )
    k_factor: float = Field(1.0, gt=0, le=100)
    mass: float = Field(2000.0, gt=0, description="Z' pole mass in GeV (kind=zprime; below generate.sqrt_s for every kind)")
    width: float = Field(20.0, gt=0, description="Z' total width in GeV (kind=zprime), below its mass")
    pthat_min: float = Field(0.0, ge=0, description="PhaseSpace:pTHatMin in GeV, below sqrt_s / 2")
    pthat_max: float | None = Field(None, gt=0, description="PhaseSpace:pTHatMax in GeV (a slice), above "
                                    "pthat_min and at most sqrt_s / 2")
    bias_pow: float = Field(0.0, ge=0, le=10, description="PhaseSpace:bias2SelectionPow (Pythia: 0-10); 0 switches "
                            "biasing off")
    bias_ref: float = Field(100.0, ge=1, description="PhaseSpace:bias2SelectionRef in GeV (Pythia: at least 1)")
    events_scale: float = Field(1.0, gt=0, le=1000, description="this sample generates events_scale x generate.events")
    variation: str = Field(
        NOMINAL_VARIATION, pattern=r"^[A-Za-z0-9_]+$",
        description="the dataset's variation (fileset metadata 'variation'): 'nominal', or the name of a "
                    "two-point systematic sample of its process (e.g. the AGC's scaleup / scaledown)",
    )
    scale_multiplier: float = Field(
        1.0, gt=0, allow_inf_nan=False,
        description="multiplies every renormalisation and factorisation scale mu of Pythia (hard process "
                    "and shower: its *MultFac = multiplier^2, which Pythia allows in 0.1-10): 2 and 0.5 "
                    "make scaleup / scaledown",
    )

    @field_validator("scale_multiplier")
    @classmethod
    def _pythia_range(cls, m: float) -> float:
        if not PYTHIA_MULT_FAC[0] <= m * m <= PYTHIA_MULT_FAC[1]:
            raise ValueError(f"Pythia takes scale factors mu^2 in {list(PYTHIA_MULT_FAC)}: the multiplier of mu "
                             f"must be in [{PYTHIA_MULT_FAC[0] ** 0.5:.4f}, {PYTHIA_MULT_FAC[1] ** 0.5:.4f}]")
        return m

    @model_validator(mode="after")
    def _varied_scales_are_a_variation(self) -> "SampleConfig":
        if self.scale_multiplier != 1.0 and self.variation == NOMINAL_VARIATION:
            raise ValueError("a sample with scale_multiplier != 1 is a systematic variation: give it a "
                             "variation name other than 'nominal' (e.g. scaleup / scaledown)")
        if self.pthat_max is not None and not self.pthat_max > self.pthat_min:
            raise at("pthat_min", f"pthat_min = {self.pthat_min} must be below pthat_max = {self.pthat_max}")
        if not self.width < self.mass:
            raise at("width", f"must be below the mass, {self.mass} GeV (got {self.width})")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_variation(self, handler):
        """Dumps leave ``variation`` / ``scale_multiplier`` out at their defaults, so every hash of a
        dump (the generated files' names, section hashes) is what it was before these fields existed."""
        data = handler(self)
        for field, default in _VARIATION_DEFAULTS.items():
            if field in data and data[field] == default:
                del data[field]
        return data


class PseudoDataConfig(Strict):
    """Pseudo-data: a Poisson realisation of the MC prediction at the configured luminosity."""

    enabled: StrictBool = True
    signal_strength: float = Field(0.0, ge=0, le=1000, description="injected mu for the signal samples")
    stream_filter: StrictBool = Field(
        True, description="keep only triggered events with a muon and a fat jet above the thresholds (a skim)"
    )
    muon_pt_min: float = Field(50.0, ge=0, description="GeV, below generate.sqrt_s / 2")
    fatjet_pt_min: float = Field(200.0, ge=0, description="GeV, below generate.sqrt_s / 2")


class GenerateConfig(Strict):
    out: str = "data/generated"
    events: int = Field(15000, gt=0, le=EVENTS_MAX, description="events per MC sample (x its events_scale)")
    events_per_file: int = Field(5000, gt=0, le=10**8)
    batch_size: int = Field(500, gt=0, le=100_000, description="events per Pythia nextBatch call")
    seed: int = Field(42, ge=0, le=SEED_MAX)
    workers: int = Field(2, gt=0, le=POOL_WORKERS_MAX)
    sqrt_s: float = Field(13000.0, gt=0, le=1e6, description="centre-of-mass energy in GeV")
    underlying_event: StrictBool = Field(
        False, description="Pythia multiparton interactions; 5x slower, see generate/pythia.py"
    )
    samples: dict[str, SampleConfig]
    data: PseudoDataConfig = PseudoDataConfig()

    @model_validator(mode="after")
    def _slices_tile_phase_space(self) -> "GenerateConfig":
        """Samples of one (process, variation) are pT-hat slices sharing its cross section: they must tile
        [min, inf). A two-point variation (``variation`` != nominal) is its own group: its samples tile
        the phase space again, independently of the nominal ones."""
        if not self.samples:
            raise at("samples", "at least one sample is required")
        for name, sample in self.samples.items():  # kinematics within the collision's energy
            if not sample.mass < self.sqrt_s:
                raise at(f"samples.{name}.mass", f"must be below sqrt_s = {self.sqrt_s} GeV (got {sample.mass})")
            for field in ("pthat_min", "pthat_max", "bias_ref"):
                value = getattr(sample, field)
                if value is not None and not value <= self.sqrt_s / 2:
                    raise at(f"samples.{name}.{field}", f"at most sqrt_s / 2 = {self.sqrt_s / 2} GeV (got {value})")
        for field in ("muon_pt_min", "fatjet_pt_min"):
            if not getattr(self.data, field) < self.sqrt_s / 2:
                raise at(f"data.{field}", f"must be below sqrt_s / 2 = {self.sqrt_s / 2} GeV "
                                          f"(got {getattr(self.data, field)})")
        by_process: dict[tuple[str, str], list[tuple[str, SampleConfig]]] = {}
        for name, sample in self.samples.items():
            by_process.setdefault((sample.process or name, sample.variation), []).append((name, sample))
        for (process_name, variation), slices in by_process.items():
            if len(slices) == 1:
                continue
            process = process_name if variation == NOMINAL_VARIATION else f"{process_name} ({variation})"
            names = [n for n, _ in slices]
            if len({(s.kind, s.xsec_pb, s.k_factor, s.scale_multiplier) for _, s in slices}) != 1:
                raise at("samples", f"slices {names} of process {process!r} need the same kind, xsec_pb, "
                                    "k_factor, scale_multiplier")
            ordered = sorted(slices, key=lambda item: item[1].pthat_min)
            for (lo_name, lo), (hi_name, hi) in zip(ordered, ordered[1:]):
                if lo.pthat_max != hi.pthat_min:
                    raise at("samples", f"slices {lo_name!r} (pthat_max={lo.pthat_max}) and {hi_name!r} "
                                        f"(pthat_min={hi.pthat_min}) of process {process!r} must meet")
            if ordered[-1][1].pthat_max is not None:
                raise at(f"samples.{ordered[-1][0]}.pthat_max",
                         f"the last slice of process {process!r} must have no pthat_max")
        return self


# --------------------------------------------------------------------------------------------- skim
class SkimConfig(Strict):
    """How the skim runs (zprime-grad skim; Analysis.skim). Only chunksize and buckets change results."""

    executor: Literal["iterative", "futures", "dask"] = "futures"
    workers: int = Field(2, gt=0, le=POOL_WORKERS_MAX, description="futures processes (a Dask cluster is the cluster "
                         "section's)")
    chunksize: int = Field(100_000, gt=0, le=CHUNKSIZE_MAX, description="entries per coffea chunk")
    buckets: tuple[int, ...] = Field(
        (256, 1024, 4096, 16384, 65536), description="chunk lengths are padded up to one of these (JAX shapes), "
        f"each 1 to {2**24}"
    )
    treename: str = "Events"
    skip_bad_files: StrictBool = False
    retries: int = Field(3, ge=0, le=100, description="Dask task retries")
    persist: str | None = Field(
        None, description="fsspec URL (file://, s3://, root://) where a cluster run also keeps its skim, and a later "
        "run with the same config and inputs reads it from; read and written by the workers only")

    @model_validator(mode="after")
    def _buckets_positive(self) -> "SkimConfig":
        if not self.buckets or not all(0 < b <= 2**24 for b in self.buckets):
            raise at("buckets", f"must be a non-empty list of lengths from 1 to {2**24} (got {list(self.buckets)})")
        return self


# --------------------------------------------------------------------------------------------- optimise
class RelaxationConfig(Strict):
    """Soft-cut sigmoid slope and KDE bandwidth (fraction of the bin width), annealed geometrically."""

    slope_start: float = Field(5.0, gt=0, le=1000, description="sigmoid slope in units of each cut's scale, epoch 0")
    slope_end: float = Field(20.0, gt=0, le=1000)
    bandwidth_start: float = Field(0.5, gt=0, le=100, description="KDE bandwidth / bin width, epoch 0")
    bandwidth_end: float = Field(0.15, gt=0, le=100)
    anneal_epochs: int = Field(30, ge=0, le=EPOCHS_MAX, description="epochs from start to end values (then held)")


class TLSConfig(Strict):
    """Client certificates for a tls:// Dask scheduler."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None


# the zprime_ttbar processor's tagger-score and top-pT thresholds (configs/zprime.yaml says why)
DEFAULT_LEARNING_RATES = {"top_pt_threshold": 0.3, "btag_threshold": 0.005, "toptag_threshold": 0.005}


class OptimiseConfig(Strict):
    """The gradient-based cut optimisation (zprime-grad optimise; Analysis.optimise)."""

    epochs: int = Field(40, ge=0, le=EPOCHS_MAX)
    objective: Literal["discovery", "cls", "mu_uncertainty"] = "discovery"
    gradient: Literal["auto", "forward", "reverse"] = "auto"
    forward_max_params: int = Field(32, gt=0, description="auto: forward mode up to this many parameters")
    learning_rate: float = Field(0.05, gt=0, le=STEP_MAX, description="Adam step, in units of each parameter's scale")
    learning_rates: dict[str, Annotated[float, Field(gt=0, le=STEP_MAX)]] = Field(
        default_factory=lambda: dict(DEFAULT_LEARNING_RATES),
        description="per-parameter overrides (the default: the zprime_ttbar processor's tagger and top-pT thresholds)")
    observable: str | None = Field(
        "mtt", description="the fit observable of every channel; None: each channel's own (the processor declares it)")
    bins: int = Field(10, gt=0, le=10_000)
    range: tuple[float, float] = Field((200.0, 3000.0), description="(low, high) of the observable, low < high")
    kde_method: Literal["dense", "local"] = "dense"
    precision: Literal["float32", "float64"] = Field(
        "float32", description="the kernel's per-event arithmetic (cuts, KDE); its sums, the templates and the "
        "statistics are float64 either way")
    relaxation: RelaxationConfig = RelaxationConfig()
    signal: str = Field("zprime", description="the process scaled by the POI mu")
    free_backgrounds: tuple[str, ...] = Field(("ttbar", "wjets"), description="normfactors fitted in the CRs")
    xsec_uncertainty: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: {"single_top": 0.15}, description="relative, per minor background (0 to < 1)")
    default_xsec_uncertainty: float = Field(0.15, ge=0, lt=1, description="other minor backgrounds (relative)")
    background_floor: float = Field(1e-3, ge=0, le=100, description="events added per bin to every background")
    patience: int = Field(10, gt=0, description="early stop after this many epochs without improvement")
    min_delta: float = Field(1e-4, ge=0, lt=1, description="relative improvement of train Z0 that counts")
    lr_shrink: float = Field(0.5, gt=0, lt=1, description="learning-rate factor after a non-finite step")
    max_rejections: int = Field(8, gt=0, le=1000)
    backend: Literal["local", "dask"] = Field(
        "local", description="local: chunks in this process; dask: on the cluster section's cluster (implied by a scheduler)")
    fan_in: int = Field(8, ge=2, description="tree-reduction fan-in on the cluster")
    networks: dict[str, "NetworkUseConfig"] = Field(
        default_factory=dict, description="models (top-level section) the channels cut on, fine-tuned with the cuts")
    finetune: "FineTuneConfig" = Field(default_factory=lambda: FineTuneConfig(),
                                       description="the fine-tuning stage of zprime-grad run (networks only)")

    @model_validator(mode="after")
    def _range_ordered(self) -> "OptimiseConfig":
        low, high = self.range
        if not (low < high and max(abs(low), abs(high)) <= FLOAT32_MAX):
            raise at("range", f"must be (low, high) with low < high, within float32's +-{FLOAT32_MAX:.4g} (the "
                              f"columns') (got {list(self.range)})")
        return self


# --------------------------------------------------------------------------------------------- cluster
class AdaptConfig(Strict):
    """Adaptive scaling of a dask-gateway cluster."""

    minimum: int = Field(0, ge=0, le=CLUSTER_WORKERS_MAX)
    maximum: int = Field(4, gt=0, le=CLUSTER_WORKERS_MAX)

    @model_validator(mode="after")
    def _ordered(self) -> "AdaptConfig":
        if self.minimum > self.maximum:
            raise at("minimum", f"must not exceed maximum = {self.maximum} (got {self.minimum})")
        return self


class GatewayConfig(Strict):
    """A dask-gateway server (a facility's, or a test's local one). Secrets never live in the config."""

    address: str | None = Field(
        None, description="https:// URL of the gateway (an http:// URL sends credentials in cleartext: only if "
        "asked for explicitly); None: dask config gateway.address")
    proxy_address: str | None = Field(None, description="tcp:// scheduler proxy, when not on the gateway's port")
    auth: Literal["default", "basic", "kerberos", "jupyterhub"] = Field(
        "default", description="default: the dask config's gateway.auth.type")
    username: str | None = Field(None, description="basic auth user (default: the login name)")
    password_env: str = Field("DASK_GATEWAY_PASSWORD", description="environment variable holding the basic password")
    cluster_name: str | None = Field(None, description="connect to this running cluster instead of starting one")
    options: dict[str, Any] = Field(default_factory=dict, description="cluster options (gateway.cluster_options())")
    workers: int | None = Field(None, gt=0, le=CLUSTER_WORKERS_MAX,
                                description="scale to this many workers (default: cluster.workers)")
    adapt: AdaptConfig | None = Field(None, description="adaptive scaling instead of a fixed scale")
    shutdown: StrictBool = Field(True, description="shut down a cluster this run started when it ends")


class ClusterConfig(Strict):
    """Where every Dask stage (skim, optimise, validate, run) runs: one section, one ``connect``."""

    kind: Literal["local", "scheduler", "gateway"] = Field(
        "local", description="local: a LocalCluster on 127.0.0.1; scheduler: address; gateway: dask-gateway")
    address: str | None = Field(
        None, description="tcp://host:8786, tls://host:8786, gateway://host:port (the gateway over https) or "
        "gateway+http://host:port (plain http, credentials in cleartext: only when asked for explicitly)")
    workers: int = Field(2, gt=0, le=CLUSTER_WORKERS_MAX, description="LocalCluster workers; the default gateway scale")
    dashboard: str | None = Field(
        None, description="LocalCluster dashboard as [host]:port (127.0.0.1:8787; a port alone binds 127.0.0.1, "
        "0.0.0.0:8787 every interface); None: no dashboard (the scheduler's /health endpoint on 127.0.0.1, any port)")
    tls: TLSConfig = Field(TLSConfig(), description="client certificates for a tls:// scheduler")
    gateway: GatewayConfig = GatewayConfig()
    timeout_s: float = Field(30.0, gt=0, le=86_400, description="connecting to the scheduler (at most a day)")
    wait_workers_s: float = Field(180.0, gt=0, le=86_400, description="waiting for the first (or the scaled) workers")
    check_versions: StrictBool = Field(True, description="fail if workers run other zprime_grad/jax/coffea/dask versions")

    @field_validator("dashboard")
    @classmethod
    def _dashboard_address(cls, value: str | None) -> str | None:
        host, _, port = (value or "0").rpartition(":")
        if not (port.isdigit() and int(port) <= 65535 and (host == "" or host.strip("[]") and " " not in host)):
            raise ValueError("must be [host]:port, e.g. 127.0.0.1:8787 (or null: no dashboard)")
        return value


# --------------------------------------------------------------------------------------------- models
class ModelTrainConfig(Strict):
    """Pre-training (zprime-grad train): weighted cross-entropy on the even events, full batch, Adam."""

    epochs: int = Field(300, ge=0, le=EPOCHS_MAX)
    learning_rate: float = Field(0.01, gt=0, le=STEP_MAX)
    patience: int = Field(30, gt=0, description="stop after this many epochs without a better validation loss")
    min_delta: float = Field(1e-5, ge=0, lt=1, description="relative improvement of the validation loss that counts")
    validation_fraction: float = Field(0.25, gt=0, lt=1, description="share of the even events held out for early stopping")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="weight initialisation")


class ModelConfig(Strict):
    """A small MLP on skim columns: classifier of processes, whose score-class probability is the score."""

    features: tuple[str, ...] = Field(description="skim columns; 'col[i]' is slot i of a padded collection")
    hidden: tuple[int, ...] = Field((32, 16), description="hidden layer widths")
    activation: Literal["relu", "tanh", "gelu", "silu", "elu"] = "relu"
    classes: dict[str, tuple[str, ...]] | None = Field(
        None, description="class -> MC processes; None: optimise.signal vs every other MC process")
    score_class: str | None = Field(None, description="the class whose probability is the score (default: the signal's)")
    train: ModelTrainConfig = ModelTrainConfig()
    init_from: str | None = Field(None, description="a network file (zprime-grad train) instead of training")

    @model_validator(mode="after")
    def _shapes(self) -> "ModelConfig":
        if not self.features:
            raise at("features", "must name at least one skim column")
        if not all(0 < h <= 65_536 for h in self.hidden):
            raise at("hidden", f"widths must be from 1 to 65536 (got {list(self.hidden)})")
        if self.classes is not None and len(self.classes) < 2:
            raise at("classes", "needs at least two classes")
        return self


class NetworkUseConfig(Strict):
    """Where a model attaches in the optimisation: a soft cut score > threshold in ``channels``."""

    use: Literal["cut"] = "cut"
    channels: tuple[str, ...] = ("signal",)
    learning_rate: float = Field(0.001, ge=0, le=STEP_MAX, description="Adam step of the weights (0: frozen)")
    threshold: float = Field(0.5, description="initial score threshold, within bounds")
    bounds: tuple[float, float] = Field((0.01, 0.99), description="(low, high) of the threshold, within [0, 1]")
    scale: float = Field(0.25, gt=0, le=100, description="sigmoid width unit of the score cut")

    @model_validator(mode="after")
    def _threshold_within_bounds(self) -> "NetworkUseConfig":
        low, high = self.bounds
        if not 0 <= low < high <= 1:
            raise at("bounds", f"must be (low, high) with 0 <= low < high <= 1: the score is a probability "
                               f"(got {list(self.bounds)})")
        if not low <= self.threshold <= high:
            raise at("threshold", f"must be within bounds {list(self.bounds)} (got {self.threshold})")
        return self


class FineTuneConfig(Strict):
    """How ``zprime-grad run`` fine-tunes the networks' weights with the cuts (`zprime_grad.stages.learned`).

    It starts at the optimum with the pre-trained weights frozen, so the relaxation is held at its end
    values and the cut thresholds move at a fraction of their step; a softer score cut spreads the weights'
    gradient over many events instead of the few at a sharp threshold (less memorising of single MC events).
    """

    epochs: int | None = Field(None, ge=0, le=EPOCHS_MAX, description="None: optimise.epochs")
    threshold_step: float = Field(0.1, ge=0, le=10, description="the cut thresholds' Adam step, as a fraction of theirs")
    score_scale: float | None = Field(
        None, gt=0, le=100, description="sigmoid width unit of every score cut while the weights train (None: its scale)")
    relaxation: Literal["end", "schedule"] = Field(
        "end", description="end: slope and bandwidth held at their end values; schedule: annealed again")


OptimiseConfig.model_rebuild()


# --------------------------------------------------------------------------------------------- validate
class ValidationConfig(Strict):
    """The hard-cut validation on the held-out events (zprime-grad validate; the last stage of run)."""

    bootstrap: int = Field(200, ge=0, le=100_000, description="Poisson bootstrap replicas of the held-out MC: the spread of "
                                                 "Z0 and of the ratio between analyses (0: off)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the bootstrap counts")
    toys: int = Field(0, ge=0, le=1_000_000, description="pseudo-experiments per hypothesis (b-only and s+b) "
                      "checking the asymptotic Z0 of the baseline and optimised workspaces (stats/toys.py; "
                      "0: off; the full model fits ~10-30 toys/s on 2 cores)")
    plots: StrictBool = Field(True, description="draw the PNG plots and the report's images (false: numbers, "
                                          "workspaces and report text only, e.g. in batch comparisons)")


class ScanConfig(Strict):
    """The black-box baseline (zprime-grad scan; run: after optimise, validated beside θ*): the same cuts
    searched without gradients on the same training events, in the hard-cut limit of the same objective."""

    methods: list[Literal["sobol", "tpe"]] = Field(["sobol", "tpe"], description="searches to run: sobol "
                                                   "(scrambled Sobol points), tpe (Optuna's TPE); []: no scan")
    budget: int | None = Field(None, ge=1, le=1_000_000, description="objective evaluations per method; None: "
                               "the gradient run's, epochs x (1 + parameters)")
    batch: int = Field(16, ge=1, le=4096, description="candidates evaluated in one pass over the chunks")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the Sobol scrambling and of the TPE sampler")

    @field_validator("methods")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each method at most once")
        return value


# --------------------------------------------------------------------------------------------- root
class CorrectionFiles(Strict):
    """correctionlib files per POG (a path relative to this config file, or a URL); None: the files
    shipped with the package (the generated detector's corrections, in the POG schemas)."""

    muon: str | None = Field(None, description="MUO scale factors (e.g. .../POG/MUO/2016postVFP_UL/muon_Z.json.gz)")
    btag: str | None = Field(None, description="BTV fixed-WP scale factors (btagging.json)")
    pileup: str | None = Field(None, description="LUM pileup weights (puWeights.json)")
    jme: str | None = Field(None, description="JME JES uncertainty and JER (jet_jerc.json); fat jets use it too")


class AnalysisConfig(Strict):
    """What the physics depends on: the processor, the era (data/eras.yaml) and the era's inputs."""

    name: str = "zprime_ttbar"
    processor: str = Field("zprime_ttbar", description="entry point in the zprime_grad.processors group")
    era: str = Field("generated", description="data-taking era: a key of zprime_grad/data/eras.yaml")
    tagger: str | None = Field(None, description="b tagger (a key of the era's taggers); None: the era's default")
    lumi_pb: float | None = Field(
        None, gt=0, le=1e7, allow_inf_nan=False,
        description="integrated luminosity in pb^-1; None: the certified one of lumi_csv, else the era's")
    lumi_uncertainty: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False,
                                           description="relative; None: the era's")
    golden_json: str | None = Field(
        None, description="certified-luminosity JSON (path or URL) every data event must pass; None: the "
        "package's own for the 'generated' era, an error for data of a real era; 'none': no mask (say why)")
    lumi_csv: str | None = Field(None, description="brilcalc --byls CSV: the certified luminosity within golden_json")
    corrections: CorrectionFiles = CorrectionFiles()
    correction_keys: dict[str, str | list[str]] = Field(
        default_factory=dict, description="override the era's correction names (muon, pileup, jes_jet, "
        "jes_fatjet, jer_resolution, jer_sf)")
    options: dict[str, Any] = Field(default_factory=dict, description="processor options (the processor's own model)")

    @model_validator(mode="before")
    @classmethod
    def _era_fills_defaults(cls, data: Any) -> Any:
        """Luminosity and its uncertainty default to the era's (lumi_pb only without a lumi_csv)."""
        from zprime_grad import eras

        if not isinstance(data, dict) or data.get("era", "generated") not in eras.names():
            return data
        era = eras.era(data.get("era", "generated"))
        data = dict(data)
        if data.get("lumi_pb") is None and data.get("lumi_csv") is None:
            data["lumi_pb"] = era.lumi_pb
        if data.get("lumi_uncertainty") is None:
            data["lumi_uncertainty"] = era.lumi_uncertainty
        return data

    @model_validator(mode="after")
    def _consistent_with_era(self) -> "AnalysisConfig":
        from zprime_grad import eras

        if self.era not in eras.names():
            raise ValueError(f"unknown era {self.era!r} (known: {', '.join(eras.names())})")
        era = eras.era(self.era)
        if self.tagger is not None and self.tagger not in era.taggers:
            raise ValueError(f"tagger {self.tagger!r} is not one of era {self.era}'s: {', '.join(era.taggers)}")
        unknown = sorted(set(self.correction_keys) - set(eras.CORRECTION_KINDS))
        if unknown:
            raise ValueError(f"correction_keys {unknown}: known kinds are {', '.join(eras.CORRECTION_KINDS)}")
        if self.lumi_pb is not None and self.lumi_csv is not None:
            raise ValueError("give lumi_pb or lumi_csv, not both")
        return self


class Config(Strict):
    """The whole config. Every field's default is the value ``configs/zprime.yaml`` spells out (the
    documented default analysis; tests/unit/test_config_values.py holds them equal), so an empty or
    partial config means those values. The one exception is the inputs: without ``generate:`` or
    ``fileset:`` a config names no events (``run`` refuses it), never the default Z' samples unasked."""

    analysis: AnalysisConfig = AnalysisConfig()
    generate: GenerateConfig | None = Field(None, description="the embedded default samples; None: no generation")
    fileset: str | dict[str, Any] | None = Field(
        None, description="coffea fileset (JSON path, or inline) that run skims instead of generating; "
        "relative paths are relative to this config file")
    optimise: OptimiseConfig = OptimiseConfig()
    validation: ValidationConfig = ValidationConfig()
    scan: ScanConfig = ScanConfig()
    skim: SkimConfig = SkimConfig()
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="learned observables (zprime-grad train)")
    cluster: ClusterConfig = ClusterConfig()

    source: str | None = Field(None, exclude=True, description="the file this config was read from")

    @model_validator(mode="after")
    def _networks_are_models(self) -> "Config":
        unknown = sorted(set(self.optimise.networks) - set(self.models))
        if unknown:
            raise ValueError(f"optimise.networks {unknown} are not declared under models")
        return self

    def section_hash(self, *sections: str) -> str:
        """A stable hash of the named sections: what a cached stage output is keyed by."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(path: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown field '{field}'")
            continue
        message, given = e["msg"].removeprefix("Value error, "), e.get("input")
        if message.startswith("@"):  # `at`: a model validator names its own field and says what it got
            sub, _, message = message[1:].partition(": ")
            field = sub if field == "<root>" else f"{field}.{sub}"
            given = {}
        shown = "" if isinstance(given, (dict, list, tuple)) else f" (got {given!r})"  # never a whole section
        lines.append(f"{path}: field '{field}': {message}{shown}")
    return "invalid configuration\n  " + "\n  ".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err)) from None
    if config.analysis.lumi_pb is None:  # lumi_csv: the luminosity its golden JSON certifies
        from zprime_grad.era_inputs import certified_lumi

        lumi = certified_lumi(config.analysis, source)
        config = config.model_copy(update={"analysis": config.analysis.model_copy(update={"lumi_pb": lumi})})
    return config


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a YAML config; ``None`` means the packaged default ``configs/zprime.yaml``."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    return parse_config(_read(path, ()), str(path))


def _read(path: Path, chain: tuple[Path, ...]) -> dict:
    """The mapping a config file means: its ``extends`` parent's raw mapping merged under its own (the
    parent is validated only as part of the child, so an era default never overrides the child's era)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: field 'extends': a config file name (got {base!r})")
    parent = (path.parent / base).resolve()
    if parent in chain or parent == path.resolve():
        raise ConfigError(f"{path}: field 'extends': {base} leads back to a config already in the chain "
                          f"({' -> '.join(p.name for p in (*chain, path))} -> {base})")
    return _merge(_read(path.parent / base, (*chain, path.resolve())), data)


def _merge(base: dict, over: dict) -> dict:
    """``extends``: mappings merge key by key, anything else in ``over`` replaces ``base``."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def as_data(config: Config) -> dict[str, Any]:
    """The config as the mapping it was parsed from (``parse_config(as_data(c))`` gives ``c`` back)."""
    data = config.model_dump(mode="json", exclude={"source"})
    if data["analysis"].get("lumi_csv"):
        data["analysis"]["lumi_pb"] = None  # recomputed from the CSV, as when the file was read
    return data


def override(config: Config, **sections: dict[str, Any]) -> Config:
    """The config with some fields replaced, validated like the file (``override(c, optimise={"epochs": 3})``
    for a command-line ``--epochs``); ``None`` values are left as they are. Keeps ``source``."""
    data = as_data(config)
    for section, changes in sections.items():
        given = {k: v for k, v in changes.items() if v is not None}
        if given:
            data[section] = _merge(data.get(section) or {}, given)
    return parse_config(data, config.source or "<dict>").model_copy(update={"source": config.source})
