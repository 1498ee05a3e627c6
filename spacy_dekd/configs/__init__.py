"""The shipped configs: `dekd.cfg` and `teacher.cfg` are written by hand,
every other distillation config is `dekd.cfg` with a few settings changed.

Baselines and ablations are configurations of one objective, not code paths
(docs/DESIGN.md's table). `python -m spacy init distill-config OUTPUT --variant
NAME` writes one for an installed user; `scripts/make_configs.py` writes all
of them into the project's `configs/`, and a test keeps the two equal.
"""
import textwrap
from pathlib import Path
from typing import Any, Dict

from thinc.api import Config

TEMPLATES = Path(__file__).parent
WRITTEN = ("teacher", "dekd")  # by hand; the variants below are generated


def read(name: str) -> str:
    return (TEMPLATES / f"{name}.cfg").read_text(encoding="utf8")


TEACHER_ONLY = {"@dekd_selectors": "spacy-dekd.TeacherOnlyRouter.v1"}
ASSISTANT_ONLY = {"@dekd_selectors": "spacy-dekd.AssistantOnlyRouter.v1"}
ALL = {"@dekd_selectors": "spacy-dekd.AllSelector.v1", "seed": "${system.seed}"}
NO_ALIGNMENT = {"alignment_weight": 0.0, "alignment": None, "align_rows": None}
KD_WEIGHTS = {"ce_weight": 0.5, "ta_weight": 0.5}

# A compact pretrained student (MiniLM-L6, width 384, its own tokenizer) that
# also learns from unlabelled text the teacher answers in query rounds, under
# a teacher budget of half of all examples. The teacher alone answers (no
# assistant): the 6-layer assistant of the workflow (79 % test, distilled
# from 800 sentences) cost 2-3 points when it answered the most uncertain
# half (docs/RESULTS.md). λ2 = 0.5 as vanilla KD's, and λ3 = 0.005: six
# aligned layers through fresh 384 -> 768 projections start at L_DA ≈ 10.
# bfloat16 autocast trains it 2.3x faster on a CPU that has it.
MINILM = {
    "paths.encoder": "assets/all-MiniLM-L6-v2",
    "paths.unlabeled": "corpus/movies/unlabeled.txt",
    "corpora.unlabeled": {"@readers": "spacy.PlainTextCorpus.v1", "path": "${paths.unlabeled}"},
    "components.textcat.model.pooling": "mean",
    "distillation.student_init": {"@misc": "spacy-dekd.StudentFromPretrained.v1"},
    "distillation.unlabeled_corpus": "corpora.unlabeled",
    "distillation.teacher_budget": 0.5,
    "distillation.mixed_precision": True,
    "distillation.objective.teacher_assistant.router": TEACHER_ONLY,
    "distillation.objective": {"ta_weight": 0.5, "alignment_weight": 0.005},
}
KD = {
    "distillation.objective.selector": ALL,
    "distillation.objective.teacher_assistant.router": TEACHER_ONLY,
    "distillation.objective": {**NO_ALIGNMENT, **KD_WEIGHTS},
}
# The multi-teacher baselines (the paper's Table 3), the teacher and the
# assistant as their two teachers: both answer every example, as vanilla KD's
# teacher does, and the method says how the student learns from the two.
CE = {"@dekd_losses": "spacy-dekd.CrossEntropy.v1"}
KL = {"@dekd_losses": "spacy-dekd.KLDivergence.v1", "temperature": "${distillation.temperature}", "scale_by_temperature": True}
MULTI_TEACHER = {"distillation.objective.selector": ALL, "distillation.objective": {**NO_ALIGNMENT, **KD_WEIGHTS}}
RANDOM = {"distillation.objective.selector": {"@dekd_selectors": "spacy-dekd.RandomSelector.v1", "ratio": 0.5, "seed": "${system.seed}"}}

# name: (description, {dotted path: value}); None removes a block.
VARIANTS: Dict[str, Any] = {
    "paper": (
        "DeKD with the paper's literal readings: the hidden-softmax layer score "
        "(Eq. 8 as written), the summed norm (Eq. 9), λ = 0.5 / 0.3 / 0.2, lr 2e-5 "
        "(Sec. 4.3), no warmup, teacher outputs for the selected rows only.",
        {
            "distillation.objective.alignment.reduction": "sum",
            "distillation.objective.alignment.layer_selector.score": "hidden",
            "distillation.optimizer.learn_rate": 2e-5,
            "distillation.optimizer.warmup_ratio": 0.0,
            "distillation.objective": {
                "ce_weight": 0.5, "ta_weight": 0.3, "alignment_weight": 0.2,
                "reuse_teacher_outputs": False, "align_rows": "selected",
            },
        },
    ),
    "kd": ("Vanilla KD (Eq. 3): every example, teacher only, (1-λ)·CE + λ·KL with λ = 0.5.", KD),
    "dekd_minilm": (
        "DeKD into a pretrained MiniLM-L6 student (width 384, its own tokenizer; alignment "
        "through learned 384 -> 768 projections) that also learns from the unlabelled "
        "training sentences, the teacher answering at most half of all examples, without "
        "the assistant (see spacy_dekd/configs/__init__.py).",
        MINILM,
    ),
    "dekd_minilm_ta": (
        "dekd_minilm with the teacher assistant: the more uncertain half of each selection "
        "learns from the assistant (Eq. 6-7), λ2 = 0.5.",
        {**MINILM, "distillation.objective.teacher_assistant.router": {"@dekd_selectors": "spacy-dekd.EntropySplitRouter.v1"}},
    ),
    "kd_minilm": ("Vanilla KD into the MiniLM student over the same unlabelled text and budget.", {**MINILM, **KD}),
    "select_random_minilm": ("dekd_minilm selecting the texts for the teacher at random.", {**MINILM, **RANDOM}),
    "assistant": (
        "The teacher assistant: 6 of the teacher's layers, distilled by vanilla KD.",
        {
            "distillation.objective.selector": ALL,
            "distillation.objective.teacher_assistant.router": TEACHER_ONLY,
            "distillation.objective": {**NO_ALIGNMENT, **KD_WEIGHTS},
            "distillation.student_init.n_layers": 6,
            "distillation.max_epochs": 1,
        },
    ),
    "pkd": (
        "BERT-PKD (skip): vanilla KD plus alignment to uniformly spaced teacher layers "
        "(PKD's normalised-vector loss; β chosen as DeKD's λ3, since PKD's β = 10 on the "
        "summed loss drives the student to chance here, see docs/DESIGN.md).",
        {
            "distillation.objective.selector": ALL,
            "distillation.objective.teacher_assistant.router": TEACHER_ONLY,
            "distillation.objective.alignment.layer_selector": {"@dekd_selectors": "spacy-dekd.UniformLayerSelector.v1"},
            "distillation.objective": {**KD_WEIGHTS, "align_rows": "selected"},
        },
    ),
    "takd": (
        "TAKD, second stage: the student learns from the assistant alone (the first "
        "stage is configs/assistant.cfg).",
        {
            "distillation.objective.selector": ALL,
            "distillation.objective.teacher_assistant.router": ASSISTANT_ONLY,
            "distillation.objective": {**NO_ALIGNMENT, **KD_WEIGHTS},
        },
    ),
    "uhc": (
        "UHC: every example matched to the teacher and to the assistant independently, "
        "KL_T + KL_A (both know every class, so UHC's class subsets are the whole output).",
        {**MULTI_TEACHER, "distillation.objective.teacher_assistant": {"@dekd_losses": "spacy-dekd.UHC.v1", "kl": KL}},
    ),
    "muki": (
        "MUKI (soft): every example learns from the teacher's and the assistant's "
        "predictions averaged with weights proportional to their certainty (inverse entropy).",
        {
            **MULTI_TEACHER,
            "distillation.objective.teacher_assistant": {
                "@dekd_losses": "spacy-dekd.MUKI.v1", "integration": "soft", "temperature": "${distillation.temperature}",
            },
        },
    ),
    "dfa": (
        "DFA: every example; the student's last-layer features aligned to the teacher's "
        "and to the assistant's through learned maps (as Eq. 9), plus KL to each.",
        {"distillation.objective": {
            "@dekd_losses": "spacy-dekd.DFA.v1", "ce_weight": 0.5, "kd_weight": 0.5, "feature_weight": 0.02,
            "selector": ALL, "cross_entropy": CE, "kl": KL,
        }},
    ),
    "cfl": (
        "CFL: every example; the teacher's, the assistant's and the student's last-layer "
        "features mapped into a common space of width 128 and matched there (with "
        "reconstruction), plus KL to the two teachers' average prediction.",
        {"distillation.objective": {
            "@dekd_losses": "spacy-dekd.CFL.v1", "ce_weight": 0.5, "kd_weight": 0.5, "feature_weight": 0.02,
            "temperature": "${distillation.temperature}", "common_width": 128, "selector": ALL, "cross_entropy": CE,
        }},
    ),
    "ksm": (
        "KSM: every example; per step an actor-critic picks the knowledge the student "
        "learns from (the teacher's or the assistant's logits or last-layer features), "
        "rewarded by the student's relative dev-loss improvement on 64 dev examples.",
        {"distillation.objective": {
            "@dekd_losses": "spacy-dekd.KSM.v1", "ce_weight": 0.5, "kd_weight": 0.5, "feedback_size": 64,
            "gamma": 0.9, "policy_learn_rate": 0.1, "seed": "${system.seed}", "selector": ALL, "cross_entropy": CE, "kl": KL,
        }},
    ),
    "wo_ds": ("DeKD without data selection: every example queries.", {"distillation.objective.selector": ALL}),
    "wo_ta": ("DeKD without the teacher assistant: the teacher answers every selected example.", {"distillation.objective.teacher_assistant.router": TEACHER_ONLY}),
    "wo_doa": ("DeKD without dynamic objective alignment (λ3 = 0).", {"distillation.objective": NO_ALIGNMENT}),
    "select_lc": ("DeKD selecting by least confidence (Eq. 11).", {"distillation.objective.selector": {"@dekd_selectors": "spacy-dekd.LeastConfidenceSelector.v1", "ratio": 0.5}}),
    "select_margin": ("DeKD selecting by margin (Eq. 12).", {"distillation.objective.selector": {"@dekd_selectors": "spacy-dekd.MarginSelector.v1", "ratio": 0.5}}),
    "select_random": ("DeKD selecting at random (the paper's baseline).", RANDOM),
}


def apply(config: Config, path: str, value: Any) -> None:
    *parents, key = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    if isinstance(value, dict) and not any(k.startswith("@") for k in value):
        for sub_key, sub_value in value.items():  # settings merged into a block
            if sub_value is None:
                node[key].pop(sub_key, None)
            else:
                node[key][sub_key] = sub_value
    else:
        node[key] = value


def render(name: str) -> str:
    description, changes = VARIANTS[name]
    config = Config().from_str(read("dekd"), interpolate=False)
    for path, value in changes.items():
        apply(config, path, value)
    header = "".join(f"# {line}\n" for line in textwrap.wrap(description, 78))
    header += "# Generated from spacy_dekd/configs/dekd.cfg (scripts/make_configs.py).\n"
    return header + config.to_str(interpolate=False)


def names() -> list:
    return list(WRITTEN) + list(VARIANTS)


def config_text(name: str) -> str:
    """The text of a shipped config: as written, or rendered from dekd.cfg."""
    if name in WRITTEN:
        return read(name)
    if name not in VARIANTS:
        raise ValueError(f"Unknown config '{name}': choose one of {', '.join(names())}.")
    return render(name)
