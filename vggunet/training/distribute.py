"""Distributed training on existing engines: `tf.distribute` strategies and Keras's JAX API.

TensorFlow backend (what `vggunet.training` and the CLI use):

* `"mirrored"`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over every GPU
  of one machine (or, for tests, logical CPU devices);
* `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy`, the same over several machines,
  each started with its own `TF_CONFIG` (cluster addresses and this worker's task).

The model is built and compiled inside `strategy.scope()`, the dataset keeps the *global* batch
size (Keras splits each batch across the replicas), and only the chief writes files; the other
workers write to a temporary folder that is removed afterwards, as the Keras multi-worker
tutorial does (every worker must still save, because saving reads variables collectively).

JAX backend: `data_parallel()` installs `keras.distribution.DataParallel` over the local devices,
after which the builders' variables are replicated and each batch is sharded across devices.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence, Union

import keras

from vggunet.errors import ArgumentError
from vggunet.training.settings import STRATEGIES

ModelOrFactory = Union[keras.Model, Callable[[], keras.Model]]

# One strategy object per name and process: a second MirroredStrategy over the same devices
# reuses the first one's collective instance keys, and its all-reduces then meet the first
# one's cached shapes ("Shape mismatch in the collective instance"); MultiWorkerMirroredStrategy
# can only be created once per process anyway.
_STRATEGIES: dict[str, Any] = {}


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _check_tensorflow_backend(what: str) -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ArgumentError(
            f"{what} is a tf.distribute strategy and needs KERAS_BACKEND=tensorflow; the active "
            f"Keras backend is {backend!r}. On JAX use vggunet.distribute.data_parallel()."
        )


def read_tf_config() -> dict[str, Any]:
    """Parses and checks the `TF_CONFIG` environment variable of a multi-worker run.

    Returns:
        The parsed dict with `"cluster"` and `"task"` entries.

    Raises:
        ValueError: `TF_CONFIG` is unset, not JSON, or lacks the cluster or this task.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not text:
        raise ArgumentError(
            "strategy 'multiworker' needs the TF_CONFIG environment variable on every worker, "
            f"e.g. TF_CONFIG='{example}' (index = this worker's position); it is not set."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"TF_CONFIG is not valid JSON ({exc}): {text!r}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ArgumentError(f"TF_CONFIG has no 'cluster' mapping of job names to addresses: "
                            f"{text!r}; expected e.g. {example}.")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ArgumentError(f"TF_CONFIG has no 'task' with 'type' and 'index': {text!r}; expected "
                            f"e.g. {example}.")
    jobs = cluster.get(task["type"])
    if not isinstance(jobs, list) or not 0 <= int(task["index"]) < len(jobs):
        raise ArgumentError(
            f"TF_CONFIG task {task!r} is not in its cluster {cluster!r} (job "
            f"{task['type']!r} has {len(jobs) if isinstance(jobs, list) else 0} address(es))."
        )
    return config


def resolve_strategy(strategy: Any = None) -> Any:
    """Turns a strategy request into a `tf.distribute.Strategy` (or None for no distribution).

    Args:
        strategy: None or `"none"` (train on the default device), `"mirrored"`
            (`MirroredStrategy` over all local GPUs, or the CPU), `"multiworker"`
            (`MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`), or a
            `tf.distribute.Strategy` instance, returned as it is.

    Returns:
        The strategy, or None. A name gives the same object on every call in a process (TF's
        collectives break when two strategies span the same devices).

    Raises:
        ValueError: an unknown name (the message lists the valid ones), a strategy on a backend
            other than TensorFlow, `"multiworker"` without a usable `TF_CONFIG`, or a
            multi-worker strategy requested after TensorFlow has already started running.
    """
    if strategy is None:
        return None
    if isinstance(strategy, str):
        name = strategy.strip().lower()
        if name not in STRATEGIES:
            raise ArgumentError(
                f"Unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)} "
                f"(or a tf.distribute.Strategy instance)."
            )
        if name == "none":
            return None
        _check_tensorflow_backend(f"strategy {name!r}")
        if name in _STRATEGIES:
            return _STRATEGIES[name]
        tf = _tf()
        if name == "mirrored":
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()
            return _STRATEGIES[name]
        read_tf_config()
        try:
            _STRATEGIES[name] = _multi_worker_strategy_class()()
            return _STRATEGIES[name]
        except RuntimeError as exc:
            # TF configures collective ops once, before its runtime starts (any op, tensor or
            # variable starts it), so the strategy must come first in the program.
            raise ArgumentError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs anything "
                "(building a model or a dataset starts it). Call "
                "vggunet.distribute.resolve_strategy('multiworker') first in your program and "
                f"pass the strategy object, with a model-building function. TF said: {exc}"
            ) from None
    if _is_tf_strategy(strategy):
        _check_tensorflow_backend(type(strategy).__name__)
        return strategy
    raise ArgumentError(
        f"strategy must be None, one of {', '.join(STRATEGIES)} or a tf.distribute.Strategy, "
        f"got {strategy!r} ({type(strategy).__name__})."
    )


def _multi_worker_strategy_class() -> type:
    tf = _tf()

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """TF's MultiWorkerMirroredStrategy with the `reduce` that Keras 3's `fit` expects.

        Two calls Keras makes only on this strategy fail in TF (keras-team/keras#20585): it
        reduces its first distributed batch, an `(images, masks)` tuple, to learn the input
        shapes, but TF's multi-worker `reduce` takes single values only (MirroredStrategy maps
        over the structure); and it reduces the scalar logs (the loss) with `axis=0`, which TF
        rejects for rank-0 values. Here a structure is reduced value by value, and a scalar over
        the replicas, which is what Keras computes for them under MirroredStrategy.
        """

        def reduce(self, reduce_op: Any, value: Any, axis: Any) -> Any:
            reduce_one = super().reduce

            def reduce_value(v: Any) -> Any:
                local = self.experimental_local_results(v)[0]
                scalar = getattr(getattr(local, "shape", None), "rank", None) == 0
                return reduce_one(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(reduce_value, value)

    return KerasMultiWorkerMirroredStrategy


def _is_tf_strategy(value: Any) -> bool:
    return isinstance(value, _tf().distribute.Strategy)


def strategy_name(strategy: Any) -> str:
    """A short name for messages: `"none"`, `"mirrored"`, `"multiworker"` or the class name.

    Args:
        strategy: a resolved strategy or None.

    Returns:
        The name.
    """
    if strategy is None:
        return "none"
    tf = _tf()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return type(strategy).__name__


def num_replicas(strategy: Any) -> int:
    """Replicas that share each global batch (1 without a strategy).

    Args:
        strategy: a resolved strategy or None.

    Returns:
        `strategy.num_replicas_in_sync`, or 1.
    """
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def task_info(strategy: Any) -> tuple[str | None, int | None]:
    """This process's `(task_type, task_id)` in a multi-worker cluster.

    Args:
        strategy: a resolved strategy or None.

    Returns:
        `("worker", 0)`-style values from the strategy's cluster resolver; `(None, None)` for a
        single-machine strategy or no strategy.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, None
    task_id = resolver.task_id
    return str(resolver.task_type), None if task_id is None else int(task_id)


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes the run's files (checkpoints, state, logs).

    The chief is the task of type `"chief"`, or worker 0 when the cluster has no chief job (the
    Keras multi-worker tutorial's rule); without a cluster every process is the chief.

    Args:
        strategy: a resolved strategy or None.

    Returns:
        True for the chief (or a single-machine run).
    """
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    if task_type != "worker":
        return False
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return "chief" not in cluster and task_id == 0


def worker_dir(out_dir: str | os.PathLike, strategy: Any, *, resume: bool = False) -> Path:
    """The folder this process writes its run files to.

    The chief writes to `out_dir`; any other worker to a fresh temporary folder (delete it with
    `shutil.rmtree` when done), since all workers must save but only one copy should land.
    With `resume`, a worker's folder starts with the chief's `state.json`, `log.csv` and
    `checkpoints/last.keras`, so every worker resumes at the same epoch; `out_dir` must then be
    on a file system all workers see.

    Args:
        out_dir: the run folder given by the user.
        strategy: a resolved strategy or None.
        resume: copy the resume files into a worker's temporary folder.

    Returns:
        `Path(out_dir)` for the chief, else the temporary folder.
    """
    if is_chief(strategy):
        return Path(out_dir)
    task_type, task_id = task_info(strategy)
    folder = Path(tempfile.mkdtemp(prefix=f"vggunet-{task_type}{task_id}-"))
    if resume:
        source = Path(out_dir)
        for name in ("state.json", "log.csv", "checkpoints/last.keras"):
            if (source / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, folder / name)
    return folder


def strategy_scope(strategy: Any) -> ContextManager[Any]:
    """`strategy.scope()`, or a no-op context without a strategy.

    Args:
        strategy: a resolved strategy or None.

    Returns:
        A context manager under which variables belong to the strategy.
    """
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def build_in_scope(model: ModelOrFactory, strategy: Any) -> keras.Model:
    """The model to train under `strategy`, its variables created inside the strategy's scope.

    A callable is called inside the scope (the cheapest way: nothing is built twice). A model
    built outside is rebuilt inside from its config (`keras.models.clone_model`), then gets
    the original's weights and trainable flags; without a strategy it is returned as it is.

    Args:
        model: a `keras.Model`, or a function of no arguments returning one.
        strategy: a resolved strategy or None.

    Returns:
        The model bound to the strategy (uncompiled when rebuilt).
    """
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise ArgumentError(
                f"model must be a keras.Model or a function returning one, got {model!r}."
            )
        with strategy_scope(strategy):
            built = model()
        if not isinstance(built, keras.Model):
            raise ArgumentError(
                f"the model function {getattr(model, '__name__', model)!r} returned "
                f"{type(built).__name__}, not a keras.Model."
            )
        return built
    if strategy is None:
        return model
    try:
        with strategy.scope():
            clone = keras.models.clone_model(model)
    except Exception as exc:  # noqa: BLE001  any rebuild failure gets the same advice
        raise ArgumentError(
            f"Cannot rebuild model {model.name!r} inside the {strategy_name(strategy)} "
            f"strategy's scope ({exc}); pass a function that builds it instead (model_fn)."
        ) from exc
    clone.set_weights(model.get_weights())
    for layer in model.layers:
        clone.get_layer(layer.name).trainable = layer.trainable
    return clone


def distribute_dataset(data: Any, strategy: Any) -> Any:
    """Prepares training data for `strategy`: a multi-worker `tf.data.Dataset` is sharded by data.

    Keras itself splits each global batch across the replicas (`experimental_distribute_dataset`);
    what it cannot know is that vggunet's datasets come from decoded images, not files, so each
    worker's share must be cut by element (`AutoShardPolicy.DATA`) rather than by file.

    Args:
        data: whatever `fit` takes (a `tf.data.Dataset`, arrays, ...).
        strategy: a resolved strategy or None.

    Returns:
        The data, with sharding options set on a multi-worker `tf.data.Dataset`.
    """
    if data is None or strategy is None or strategy_name(strategy) != "multiworker":
        return data
    tf = _tf()
    if not isinstance(data, tf.data.Dataset):
        return data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def data_parallel(devices: Sequence[Any] | None = None) -> Any:
    """Installs Keras's `DataParallel` distribution (JAX backend) over the local devices.

    Models built afterwards have their variables replicated on every device, and `fit` /
    `train_on_batch` shard each batch along its first axis, so the batch size must be a
    multiple of the device count. Undo with `keras.distribution.set_distribution(None)`.
    On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N` (set before JAX starts)
    gives N devices, e.g. to test.

    Args:
        devices: device names such as `["cpu:0", "cpu:1"]`; default: all of
            `keras.distribution.list_devices()`.

    Returns:
        The installed `keras.distribution.DataParallel`.

    Raises:
        ValueError: on a backend other than JAX (Keras's distribution API is JAX-only; use a
            tf.distribute strategy on TensorFlow).
    """
    backend = keras.backend.backend()
    if backend != "jax":
        raise ArgumentError(
            f"data_parallel() uses keras.distribution, which supports the JAX backend only; the "
            f"active backend is {backend!r}. On TensorFlow pass strategy='mirrored' to "
            f"vggunet.training.train/finetune instead."
        )
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    if not devices:
        raise ArgumentError("data_parallel() found no devices.")
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return distribution
