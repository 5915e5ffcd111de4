"""What a synthesis run made and what its filters removed: counts per family and level, and in total.

``SynthStats.table()`` renders them as Markdown (the synth stage's report); ``to_dict`` / ``from_dict`` are the
``stats.json`` that ``synth_storage.save_dataset`` writes beside the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sketchmind.train.synth_filters import DROP_REASONS


@dataclass
class GroupStats:
    """Counts for one family and level; ``turns``, ``images`` and ``reflective`` sum over kept rows."""

    family: str
    level: int
    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    turns: int = 0
    images: int = 0
    reflective: int = 0

    def add(self, reason: str | None, row: Mapping[str, Any] | None = None) -> None:
        """Count one trajectory: dropped for ``reason``, or kept as ``row``."""
        self.total += 1
        if reason is not None:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            return
        if row is None:
            raise ValueError("a kept trajectory needs its row")
        self.kept += 1
        self.turns += int(row["turns"])
        self.images += int(row["n_images"])
        self.reflective += bool(row["reflective"])


@dataclass
class SynthStats:
    """What a synthesis run made: per family and level, and in total. ``table()`` renders it as Markdown."""

    groups: list[GroupStats] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def add(self, family: str, level: int, reason: str | None, row: Mapping[str, Any] | None = None) -> None:
        """Count one trajectory of ``family`` at ``level``."""
        group = next((g for g in self.groups if (g.family, g.level) == (family, level)), None)
        if group is None:
            group = GroupStats(family, level)
            self.groups.append(group)
        group.add(reason, row)

    @property
    def total(self) -> int:
        return sum(g.total for g in self.groups)

    @property
    def kept(self) -> int:
        return sum(g.kept for g in self.groups)

    @property
    def dropped(self) -> dict[str, int]:
        """Trajectories removed by each filter (every reason listed, zeros included)."""
        counts = dict.fromkeys(DROP_REASONS, 0)
        for group in self.groups:
            for reason, count in group.dropped.items():
                counts[reason] = counts.get(reason, 0) + count
        return counts

    @property
    def mean_turns(self) -> float:
        """Assistant turns per kept row."""
        return _mean(self._sum("turns"), self.kept)

    @property
    def mean_images(self) -> float:
        """Images per kept row (the input included)."""
        return _mean(self._sum("images"), self.kept)

    @property
    def reflective_share(self) -> float:
        """The share of kept rows with a reflective trajectory."""
        return _mean(self._sum("reflective"), self.kept)

    def _sum(self, key: str) -> int:
        return sum(int(getattr(group, key)) for group in self.groups)

    def table(self) -> str:
        """One Markdown row per family and level, then the totals."""
        reasons = list(self.dropped)
        head = ["family", "level", "puzzles", "kept", *(r.replace("_", " ") for r in reasons)]
        head += ["turns", "images", "reflective"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in self.groups:
            cells = [g.family, str(g.level), str(g.total), str(g.kept), *(str(g.dropped.get(r, 0)) for r in reasons)]
            cells += _means(g.turns, g.images, g.reflective, g.kept)
            lines.append("| " + " | ".join(cells) + " |")
        totals = ["**all**", "", str(self.total), str(self.kept), *(str(self.dropped[r]) for r in reasons)]
        totals += _means(self._sum("turns"), self._sum("images"), self._sum("reflective"), self.kept)
        lines.append("| " + " | ".join(totals) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the groups and config, plus the totals for people reading ``stats.json``."""
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": self.dropped,
            "mean_turns": round(self.mean_turns, 4),
            "mean_images": round(self.mean_images, 4),
            "reflective_share": round(self.reflective_share, 4),
            "groups": [asdict(g) for g in self.groups],
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthStats:
        """Read ``to_dict`` output back (the totals are recomputed from the groups)."""
        return cls(groups=[GroupStats(**g) for g in data.get("groups", [])], config=dict(data.get("config", {})))

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> SynthStats:
        """Stats of rows alone (all kept; nothing known about what was dropped)."""
        stats = cls()
        for row in rows:
            stats.add(str(row["family"]), int(row["level"]), None, row)
        return stats


def _mean(total: float, count: int) -> float:
    return total / count if count else 0.0


def _means(turns: int, images: int, reflective: int, kept: int) -> list[str]:
    return [f"{_mean(turns, kept):.1f}", f"{_mean(images, kept):.1f}", f"{100 * _mean(reflective, kept):.0f}%"]
