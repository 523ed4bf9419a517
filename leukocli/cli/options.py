"""Option definitions shared by several commands, written once.

`train` and `cv` take the same training options: they are declared here once, with
their defaults taken from `TrainOptions` (the one place defaults live), and
`with_train_options` adds them to a command, which receives a `TrainOptions`.
"""

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from ..evaluation import INFER_BATCH as INFER_BATCH
from ..modeling.backbones import BACKBONES
from ..training.options import (
    CLASS_WEIGHTS,
    KEEP,
    NO_VAL,
    PRECISIONS,
    RECIPES,
    STRATEGIES,
    TrainOptions,
)

F = TypeVar("F", bound=Callable[..., Any])


def one_of(choices: Any) -> str:
    """'a, b or c': a choice's help written from the registry the check uses, so the two
    cannot drift."""
    names = list(choices)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_format(fmt: str, choices: Sequence[str]) -> None:
    """The one check of an output --format (predict's, count's, explain's, review's)."""
    if fmt not in choices:
        from ..errors import LeukoError

        raise LeukoError(f"--format must be one of {', '.join(choices)} (got {fmt!r})")


TABLE_JSON = ("table", "json")
# `--format table|json` of the commands that print a table or, for scripts, JSON on stdout
TableOrJson = Annotated[str, typer.Option("--format", help=f"{one_of(TABLE_JSON)} (stdout).")]

# How `split` and `cv` find groups and drop what dedupe flagged: declared once for both.
GroupBy = Annotated[
    str,
    typer.Option(help="auto (rediscover augmented siblings from pixels), none, column:NAME "
                      "or pattern:REGEX; a group is never cut across train/val or folds."),
]
Exclude = Annotated[
    Path | None, typer.Option(help="A dedupe --report JSON: drop what it would quarantine.")
]
RELABEL_HELP = ("A corrections CSV saved by `leuko review`: each image it names takes the "
                "person's class (not a white cell / unclassifiable: left out); the images "
                "are not touched.")
Relabel = Annotated[Path | None, typer.Option(help=RELABEL_HELP)]
# Inference options of predict and evaluate (and cv's --tta): declared once.
TTA_HELP = ("Test-time augmentation: average over N views (flips, 12/24 degree turns, "
            "quarter turns, 5% shifts, in that order); 1 = off, at most 20.")
Tta = Annotated[int, typer.Option(help=TTA_HELP)]
InferBatch = Annotated[int, typer.Option(help="Batch size.")]
# predict's, evaluate's and count's --runtime (modeling.twin.check_runtime checks it)
Runtime = Annotated[str, typer.Option(
    help="auto: the run's TensorFlow-free twin (model.tflite, no TensorFlow start-up) when "
         "it matches model.keras, else Keras; keras: always Keras.")]
D = TrainOptions()
_CPU = RECIPES["cpu"]


# name: (annotation with its Typer option, default); the order is the help's order.
TRAIN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "train_csv": (
        Annotated[Path, typer.Option("--train", help="Training manifest or folder.")],
        Path(D.train_csv),
    ),
    "val_csv": (
        Annotated[Path, typer.Option("--val", help="Validation manifest or folder, or none: "
                                        "no validation, a fixed schedule and the last "
                                        "epoch kept (few labelled cells).")],
        Path(D.val_csv),
    ),
    "img": (
        Annotated[str, typer.Option(help="Input size HEIGHTxWIDTH.")],
        f"{D.img_size[0]}x{D.img_size[1]}",
    ),
    "batch": (
        Annotated[int, typer.Option(help="Batch size.")],
        D.batch,
    ),
    "epochs": (
        Annotated[
            int | None,
            typer.Option(
                help=f"Epochs (default: the recipe's; {RECIPES['paper'].epochs} for "
                f"paper, {_CPU.epochs} for cpu)."
            ),
        ],
        D.epochs,
    ),
    "lr": (
        Annotated[float, typer.Option(help="Initial learning rate.")],
        D.lr,
    ),
    "backbone": (
        Annotated[
            str,
            typer.Option(
                help=f"{one_of(['auto', *BACKBONES])} (auto: the --weights run's or shipped "
                "model's, else inceptionresnetv2; compact: a small CNN from scratch)."
            ),
        ],
        D.backbone,
    ),
    "weights": (
        Annotated[
            str,
            typer.Option(
                help="auto (imagenet where the backbone has it, else none), imagenet "
                "(Keras download/cache), pbc (leuko's own compact backbone, shipped), none, "
                "RUN (an earlier leuko run's backbone), or PATH to a backbone weights "
                "file (.h5)."
            ),
        ],
        D.weights,
    ),
    "unfreeze": (
        Annotated[int, typer.Option(help="Fine-tune only the top N backbone layers (0 = all).")],
        D.unfreeze,
    ),
    "augment": (
        Annotated[
            bool, typer.Option("--augment/--no-augment", help="Random augmentation in training.")
        ],
        D.augment,
    ),
    "class_weights": (
        Annotated[str, typer.Option(help=f"{one_of(CLASS_WEIGHTS)} (auto: from class "
                                         "counts).")],
        D.class_weights,
    ),
    "patience": (
        Annotated[
            int,
            typer.Option(
                help="Early-stopping patience in epochs (paper recipe; the cpu recipe "
                "runs its whole schedule and keeps the last epoch)."
            ),
        ],
        D.patience,
    ),
    "precision": (
        Annotated[str, typer.Option(help=f"{one_of(PRECISIONS)} (auto: mixed_bfloat16 where "
                                         "the CPU has bf16, mixed_float16 on a GPU, else "
                                         "float32).")],
        D.precision,
    ),
    "strategy": (
        Annotated[
            str,
            typer.Option(
                help=f"{one_of(STRATEGIES)} (mirrored: the GPUs of this machine; "
                "multiworker: the machines in TF_CONFIG)."
            ),
        ],
        D.strategy,
    ),
    "seed": (
        Annotated[int, typer.Option(help="Random seed.")],
        D.seed,
    ),
    "recipe": (
        Annotated[
            str,
            typer.Option(
                help="auto (cpu for compact, paper otherwise), paper (flips/rotations, "
                "Adam, ReduceLROnPlateau), cpu (cell crop, strong augmentation, "
                "label smoothing, AdamW with cosine decay), domain (cpu's, with the "
                "background and stain normalised inside the model and augmentation over "
                "what differs between microscopes; the wbc model's before) or "
                "cpu-balance (cpu's, with the background alone normalised inside the "
                "model: it transferred best between labs; the shipped wbc model's)."
            ),
        ],
        D.recipe,
    ),
    "crop_cell": (
        Annotated[
            int | None,
            typer.Option(
                help="Crop an NxN square around the stained cell inside the model "
                f"(0 = whole image; default: the recipe's, {_CPU.crop_cell} for cpu)."
            ),
        ],
        D.crop_cell,
    ),
    "crop_scale": (
        Annotated[
            float | None,
            typer.Option(
                help="Size the crop to the cell: its side is this many stained-cell "
                f"diameters (0 = a fixed share of the image; default: the recipe's, "
                f"{_CPU.crop_scale} for cpu)."
            ),
        ],
        D.crop_scale,
    ),
    "label_smoothing": (
        Annotated[
            float | None,
            typer.Option(help="Label smoothing (default: the recipe's)."),
        ],
        D.label_smoothing,
    ),
    "keep": (
        Annotated[
            str | None,
            typer.Option(
                help=f"Which epoch's model to save: {one_of(KEEP)} (best: lowest val loss, "
                "the paper recipe's default; last: the others', so validation figures are "
                "not chosen on validation)."
            ),
        ],
        D.keep,
    ),
    "map_": (
        Annotated[
            list[str] | None,
            typer.Option("--map", help="Rename a class of the training data: OLD=NEW "
                                       "(repeatable), e.g. to merge two datasets' names."),
        ],
        None,
    ),
    "relabel": (Relabel, None),
    "balance_by": (
        Annotated[
            str | None,
            typer.Option(metavar="COLUMN", help="A column of the training manifest (a lab, "
                         "a microscope) whose values should weigh alike: the rows of each "
                         "value are repeated to about the largest one's count."),
        ],
        None,
    ),
}


def train_options_from(values: dict[str, Any]) -> TrainOptions:
    """TrainOptions from the command line's values (sizes parsed, paths absolute)."""
    from ..data.dataset import parse_size

    kw = dict(values)
    kw["img_size"] = parse_size(kw.pop("img"))
    kw["mapping"] = tuple(kw.pop("map_") or ())
    if kw.get("relabel") is not None:
        kw["relabel"] = str(Path(kw["relabel"]).expanduser().absolute())
    for key in ("train_csv", "val_csv"):
        if key in kw and not (key == "val_csv" and str(kw[key]).strip().lower() == NO_VAL):
            kw[key] = str(Path(kw[key]).expanduser().absolute())
    return TrainOptions(**kw)


def with_train_options(*, without: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Add the shared training options to a command, which gets them as `opts`.

    The command's own parameters come first in its help; `without` leaves options out
    (cv makes its own train and validation parts, so it has no --train/--val).
    """
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        for name, (ann, default) in TRAIN_OPTIONS.items()
        if name not in without
    ]

    def decorate(fn: F) -> F:
        own_hints = get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=own_hints[p.name])
            for p in inspect.signature(fn).parameters.values()
            if p.name != "opts"
        ]
        names = {p.name for p in shared}

        @functools.wraps(fn)
        def run(**kw: Any) -> Any:
            values = {k: kw.pop(k) for k in list(kw) if k in names}
            return fn(opts=train_options_from(values), **kw)

        run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
        run.__annotations__ = {
            **{p.name: own_hints[p.name] for p in own},
            **{p.name: p.annotation for p in shared},
        }
        del run.__wrapped__  # Typer must read the new signature, not fn's
        return run  # type: ignore[return-value]

    return decorate


DEFAULT_MODEL = Path("runs/latest")
# Which model, by the name every other command uses; a command whose model was a positional
# RUN argument takes both spellings, once.
ModelOption = Annotated[
    Path | None, typer.Option("--model", help="The same as RUN (the name other commands use).")
]


def which_model(argument: Path | None, option: Path | None) -> Path:
    """RUN or --model, whichever was given (runs/latest when neither); both is refused."""
    if argument is not None and option is not None and argument != option:
        from ..errors import LeukoError

        raise LeukoError(f"give the model once: RUN {argument} or --model {option}")
    return option or argument or DEFAULT_MODEL
SHIPPED_DEFAULT = "wbc"  # leuko's shipped classifier, used when no run exists here


def model_or_shipped(model: Path | str) -> Path:
    """The --model to use: as given, or, when it is the default runs/latest and nothing is
    there, leuko's shipped classifier, said in one line on stderr (so a lab can predict
    and count right after install, and knows which model answered)."""
    from ..modeling.shipped import shipped_model

    p = Path(model)
    if p != DEFAULT_MODEL or p.exists() or p.is_symlink():
        return p
    shipped = shipped_model(SHIPPED_DEFAULT)
    if shipped is None:
        return p
    from .console import err_console

    err_console.print(f"no {DEFAULT_MODEL} here: using leuko's shipped classifier "
                      f"{SHIPPED_DEFAULT} (--model to choose another)", soft_wrap=True,
                      highlight=False)
    return Path(SHIPPED_DEFAULT)
