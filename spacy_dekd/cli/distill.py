"""`spacy distill`: spaCy v4's command, on spaCy 3.8, running DeKD.

    python -m spacy distill TEACHER STUDENT_CONFIG --output DIR
        [--assistant PATH] [--gpu-id N] [--code PATH] [--resume]
        [--distillation.max_epochs 3 ...]

Data-parallel over N devices (or N CPU processes), the same arguments:

    torchrun --nproc_per_node N -m spacy distill TEACHER STUDENT_CONFIG ...
"""
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import typer
from spacy import util
from spacy.cli._util import (
    Arg,
    Opt,
    app,
    import_code,
    parse_config_overrides,
    setup_gpu,
    show_validation_error,
)
from spacy.language import Language
from spacy.training.initialize import load_vectors_into_model
from thinc.api import fix_random_seed, set_gpu_allocator
from wasabi import color, msg

from ..distill.parallel import LaunchError, World, init_world
from ..distill.trainer import resolve_distillation
from ..errors import DistillationError, Errors, fail
from ..files import OutputError, check_output, config_inputs

DISTILL_HELP = """Distil a trained teacher pipeline into a smaller student with DeKD
(or any objective of spacy_dekd's registries). The student config has a
[distillation] block; model-best and model-last in the output folder are
complete spaCy pipelines holding the student alone."""


@app.command(
    "distill",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=DISTILL_HELP,
)
def distill_cli(
    # fmt: off
    ctx: typer.Context,  # This is only used to read additional arguments
    teacher_model: str = Arg(..., help="Teacher pipeline: a directory or an installed package"),
    student_config_path: Path = Arg(..., help="Student config with a [distillation] block", exists=True, allow_dash=True),
    output_path: Optional[Path] = Opt(None, "--output", "--output-path", "-o", help="Output directory for model-best, model-last, metrics.json"),
    assistant_model: Optional[str] = Opt(None, "--assistant", "-a", help="Teacher-assistant pipeline"),
    code_path: Optional[Path] = Opt(None, "--code", "-c", help="Path to Python file with additional code (registered functions) to be imported"),
    verbose: bool = Opt(False, "--verbose", "-V", "-VV", help="Display more information for debugging purposes"),
    use_gpu: int = Opt(-1, "--gpu-id", "-g", help="GPU ID or -1 for CPU; under torchrun any ID >= 0 means each process's LOCAL_RANK"),
    resume: bool = Opt(False, "--resume", help="Continue from the last checkpoint in the output directory"),
    # fmt: on
) -> None:
    """Distil a teacher into a student. DOCS (spaCy v4): https://spacy.io/api/cli#distill"""
    if verbose:
        util.logger.setLevel(logging.DEBUG)
        logging.getLogger("spacy_dekd").setLevel(logging.DEBUG)
    overrides = parse_config_overrides(ctx.args)
    import_code(code_path)
    world = World()
    try:
        world, use_gpu = init_world(use_gpu)
        try:
            setup_gpu(use_gpu, silent=not world.is_main)
        except ValueError as err:  # thinc: no CuPy, or no GPU it can reach
            raise LaunchError(f"--gpu-id {use_gpu}: {str(err).splitlines()[0]}; run on the CPU without --gpu-id.") from err
        distill(
            teacher_model,
            student_config_path,
            output_path,
            assistant_path=assistant_model,
            overrides=overrides,
            resume=resume,
            use_gpu=use_gpu,
            world=world,
        )
    except (DistillationError, LaunchError) as err:
        if verbose:
            raise
        fail(str(err) if not world.distributed else f"[rank {world.rank}] {err}")
    except RuntimeError as err:  # gloo / NCCL: the connection to a rank that died
        if verbose or not world.distributed:
            raise
        where = f"; --resume continues from the last evaluation saved in {output_path}" if output_path else ""
        fail(Errors.D001.format(rank=world.rank, reason=str(err).strip().splitlines()[0][:160], where=where))
    except KeyboardInterrupt:
        where = f": --resume continues from the last evaluation saved in {output_path}" if output_path else ""
        fail(Errors.D002.format(where=where), code=130)
    finally:
        world.close()


def distill(
    teacher_path: str,
    student_config_path: Path,
    output_path: Optional[Path] = None,
    *,
    assistant_path: Optional[str] = None,
    overrides: Dict[str, Any] = util.SimpleFrozenDict(),
    resume: bool = False,
    use_gpu: int = -1,
    world: World = World(),
) -> Dict[str, Any]:
    """Load the models, build the student from its config, run the trainer.
    world (World): The processes of a torchrun launch (`init_world`), or one.
    RETURNS (Dict[str, Any]): The run's metrics.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with show_validation_error(student_config_path):
        config = util.load_config(student_config_path, overrides=overrides, interpolate=False)
    if "distillation" not in config:
        raise DistillationError(Errors.D003.format(student_config_path=student_config_path))
    if output_path is not None:
        try:
            inputs = [teacher_path, student_config_path, assistant_path, *config_inputs(_interpolated(config))]
            check_output(output_path, inputs, option="--output")
        except OutputError as err:
            raise DistillationError(str(err)) from err
    allocator = config.get("system", {}).get("gpu_allocator")
    if use_gpu >= 0 and allocator:  # before anything is put on the GPU, as spacy train does
        set_gpu_allocator(allocator)
    teacher = _load(teacher_path, "teacher")
    follow_teacher_lengths(config, teacher)
    with show_validation_error(student_config_path, hint_fill=False):
        nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
        T = resolve_distillation(nlp)
    load_vectors(nlp)
    assistant = None
    if assistant_path and not T["objective"].uses_assistant:
        if world.is_main:
            print(color(f"ℹ The objective's router sends nothing to the assistant: '{assistant_path}' is not read.", fg="blue"))
    elif assistant_path:
        assistant = _load(assistant_path, "assistant")
    if output_path is not None and world.is_main:
        msg.info(f"Saving to output directory: {output_path}")
    if T["seed"] is not None:
        fix_random_seed(T["seed"])
    trainer_cls = T["trainer"]
    trainer = trainer_cls(nlp, teacher, assistant, T, output_path=output_path, stdout=sys.stdout, world=world)
    _, metrics = trainer(resume=resume)
    if output_path is not None and world.is_main:
        msg.good(f"Saved the student to {output_path / 'model-best'} and {output_path / 'model-last'}")
    return metrics


def load_vectors(nlp: Language) -> None:
    """The student's `[initialize] vectors`, loaded as `spacy train` loads
    them, before its weights are made (a textcat with static vectors reads
    their width then).
    """
    vectors = nlp.config.interpolate().get("initialize", {}).get("vectors")
    if vectors:
        if not (Path(vectors).is_dir() or util.is_package(vectors)):
            raise DistillationError(Errors.D047.format(vectors=vectors))
        load_vectors_into_model(nlp, vectors)
    if nlp.vocab.vectors.shape[0] == 0:
        for name, pipe in nlp.pipeline:
            model = getattr(pipe, "model", None)
            if model is not None and any(node.name == "static_vectors" for node in model.walk()):
                raise DistillationError(Errors.D048.format(name=name))


def follow_teacher_lengths(config: Dict[str, Any], teacher: Any) -> None:
    """`max_length = 0` in a student component's model: the length its
    teacher component truncates at (`student_to_teacher`), so that a
    workflow that chose the teacher's length from the data passes it on.
    """
    mapping = config["distillation"].get("student_to_teacher") or {}
    for student_name, teacher_name in mapping.items():
        model = config.get("components", {}).get(student_name, {}).get("model", {})
        if model.get("max_length") != 0:
            continue
        pipe = teacher.get_pipe(teacher_name) if teacher_name in teacher.pipe_names else None
        length = getattr(getattr(pipe, "shim", None), "max_length", None)
        if not length:
            raise DistillationError(Errors.D004.format(student_name=student_name, teacher_name=teacher_name))
        model["max_length"] = length


def _interpolated(config: Any) -> Any:
    """The config with its variables filled in where it can be; as it is
    where it cannot (the validation after names the problem).
    """
    try:
        return config.interpolate()
    except Exception:  # confection raises several kinds for a bad variable
        return config


def _load(path: str, role: str) -> Any:
    if not (Path(path).is_dir() or util.is_package(path)):
        raise DistillationError(Errors.D005.format(role=role, path=path))
    try:
        return util.load_model(path)
    except (OSError, ValueError) as err:
        raise DistillationError(Errors.D006.format(role=role, path=path, reason=str(err).splitlines()[0])) from err
