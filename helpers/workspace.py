"""What the earlier chapters left behind, opened in one call.

Every chapter from 02 on starts from the same things: the artefact store, the backbone,
each task's splits, chapter 01's trained prompts and chapter 02's neuron probes. A
`Workspace` opens them once and hands them out by task. It also checks that what it
hands out belongs together: every prompt must have been trained on the very splits this
chapter loaded (the same file contents, sizes and seed), and every probe must have been
read from one of those prompts. A mismatch (a task file edited since chapter 01 ran, a
chapter run with other sizes than the ones before it) stops the chapter with an error
that names both keys, instead of mixing two runs without a word.

Nothing here computes: prompts and probes are loaded from the store, in the order the
earlier chapters wrote them (trial 0 first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from datasets import Dataset
from jaxtyping import Bool
from torch import Tensor

from helpers import data, models, predictivity, prompt_trials, prompting
from helpers.store import Artefact, ArtefactStore

PROMPTS_CHAPTER = "01_prompt_tuning"
NEURONS_CHAPTER = "02_neuron_discovery"


class StaleResultsError(RuntimeError):
    """An earlier chapter's artefacts were computed from other inputs than this chapter's."""


@dataclass
class Workspace:
    """The store, the backbone and the tasks' splits, with the earlier chapters' outputs.

    Build it with `Workspace.open`; ``prompts``, ``trained`` and ``probes`` are loaded on
    first use, so a chapter that needs no probes never reads them.
    """

    store: ArtefactStore
    model: models.Backbone
    tasks: dict[str, data.TaskData]
    _names: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = list(self.tasks)

    @classmethod
    def open(
        cls,
        backbone: str,
        tasks: Sequence[str],
        sizes: data.SplitSizes | tuple[int | None, int | None, int | None],
        split_seed: int,
        store_dir: str | Path,
        precision: models.Precision = "float32",
    ) -> Workspace:
        """Open the store, load every task's splits (persisted there) and the backbone.

        ``sizes`` caps the train, dev and test splits (`data.SplitSizes`, or its three
        values in that order); ``precision`` is the backbone's (`models.resolve_precision`).
        """
        if not isinstance(sizes, data.SplitSizes):
            sizes = data.SplitSizes(*sizes)
        store = ArtefactStore(store_dir)
        loaded = {name: data.load_task(name, sizes, split_seed, store) for name in tasks}
        return cls(store, models.load_backbone(backbone, precision), loaded)

    def _load(self, chapter: str, field_name: str, stage: str) -> dict[str, list[Artefact]]:
        """The artefacts a chapter's results list under ``field_name``, for every task."""
        keys = self.store.read_results(chapter)[field_name]
        missing = [name for name in self._names if name not in keys]
        if missing:
            raise StaleResultsError(
                f"chapter {chapter} has no {field_name} for {missing}; it ran on the tasks "
                f"{sorted(keys)}: rerun it with this profile's tasks"
            )
        return {name: [self.store.load(stage, key) for key in keys[name]] for name in self._names}

    @cached_property
    def trained(self) -> dict[str, list[Artefact]]:
        """Chapter 01's prompt artefacts per task, each checked against this task's splits."""
        found = self._load(PROMPTS_CHAPTER, "prompt_keys", "prompts")
        for name, artefact in [(n, a) for n, runs in found.items() for a in runs]:
            if self.tasks[name].key not in artefact.meta["upstream"]:
                raise StaleResultsError(
                    f"prompt {artefact.key} of task {name!r} was trained on splits "
                    f"{artefact.meta['upstream'][0]}, but this chapter loaded splits "
                    f"{self.tasks[name].key} (the task's file, sizes or seed changed): "
                    f"rerun chapter {PROMPTS_CHAPTER}"
                )
        return found

    @cached_property
    def prompts(self) -> dict[str, list[prompting.SoftPromptModel]]:
        """The trained prompts as models on this chapter's backbone, trial 0 first."""
        return {
            name: [prompt_trials.load_prompt(artefact, self.model) for artefact in artefacts]
            for name, artefacts in self.trained.items()
        }

    @cached_property
    def probes(self) -> dict[str, list[Artefact]]:
        """Chapter 02's neuron probes per task, each checked against this task's prompts."""
        found = self._load(NEURONS_CHAPTER, "neuron_keys", "neurons")
        for name, artefact in [(n, a) for n, runs in found.items() for a in runs]:
            prompt_keys = {prompt.key for prompt in self.trained[name]}
            if not prompt_keys & set(artefact.meta["upstream"]):
                raise StaleResultsError(
                    f"probe {artefact.key} of task {name!r} was read from none of the "
                    f"prompts {sorted(prompt_keys)} this chapter loaded: rerun chapter "
                    f"{NEURONS_CHAPTER}"
                )
        return found

    @property
    def neuron_keys(self) -> dict[str, list[str]]:
        """The probes' artefact keys per task, trial 0 first (what a ranking comes from)."""
        return {name: [artefact.key for artefact in runs] for name, runs in self.probes.items()}

    @property
    def types(self) -> dict[str, str]:
        """Each task's type (sentiment, topic, inference, ...)."""
        return {name: task.spec.task_type for name, task in self.tasks.items()}

    def first(self, split: str, size: int | None) -> dict[str, Dataset]:
        """Each task's first ``size`` examples of a split (the whole split for None)."""
        return {name: data.head(task.split(split), size) for name, task in self.tasks.items()}

    def mask(self, positions: predictivity.Positions) -> Bool[Tensor, " prompt"]:
        """The scored positions of this backbone's prompt layout (`predictivity.scored_mask`)."""
        return predictivity.scored_mask(self.prompts[self._names[0]][0], positions)
