"""The papers behind the weightings: each strategy class lists its own in ``papers`` (a tuple of :class:`Paper`).

A model card cites :data:`INTERFERENCE` (arXiv 2602.06869, the paper that defines cross-objective interference and
CTWA) for every run, then the ``papers`` of the run's weighting class, as links and as BibTeX (:meth:`Paper.bibtex`).
Each entry holds only what is known for certain: authors as the papers are usually cited ("and others" for "et al."),
year, title where it is stated, the arXiv identifier where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["INTERFERENCE", "JACOBIAN_DESCENT", "Paper"]


@dataclass(frozen=True)
class Paper:
    """One paper: a BibTeX ``key``, ``author`` (BibTeX form, ``A and B``; ``A and others`` for "A et al."),
    ``year``, ``title`` (``None`` when not known) and ``arxiv`` (the arXiv identifier, ``None`` when it has none)."""

    key: str
    author: str
    year: int
    title: str | None = None
    arxiv: str | None = None

    @property
    def url(self) -> str | None:
        """The paper's page on the Hugging Face Hub (arXiv papers), else ``None``."""
        return f"https://huggingface.co/papers/{self.arxiv}" if self.arxiv else None

    @property
    def label(self) -> str:
        """``Title (Author year)``, or ``Author year`` without a title (``and others`` read as ``et al.``)."""
        names = self.author.replace(" and others", " et al.").replace(" and ", " & ")
        cited = f"{names} {self.year}" if names else f"arXiv {self.arxiv} ({self.year})"
        return f"{self.title} ({cited})" if self.title else cited

    def bibtex(self) -> str:
        """A ``@misc`` entry with the fields known: title, author, year, and eprint/archivePrefix for arXiv."""
        fields = [("title", self.title), ("author", self.author), ("year", str(self.year))]
        if self.arxiv:
            fields += [("eprint", self.arxiv), ("archivePrefix", "arXiv")]
        body = "".join(f"  {name} = {{{value}}},\n" for name, value in fields if value)
        return f"@misc{{{self.key},\n{body}}}"


INTERFERENCE = Paper(
    "lu2026interference",
    "Lu and Jiang",
    2026,
    "Cross-objective interference in multi-objective RL alignment",
    "2602.06869",
)
SMOOTH_TCHEBYCHEFF = Paper(
    "lin2024smooth",
    "Lin and others",
    2024,
    "Smooth Tchebycheff Scalarization for Multi-Objective Optimization",
    "2402.19078",
)
MGDA = Paper(
    "sener2018mgda", "Sener and Koltun", 2018, "Multi-Task Learning as Multi-Objective Optimization", "1810.04650"
)
GRADNORM = Paper(
    "chen2018gradnorm",
    "Chen and others",
    2018,
    "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
    "1711.02257",
)
DYNAMIC = Paper("lu2025dynamic", "Lu and others", 2025, None, "2509.11452")
PAMA = Paper("he2025pama", "He and Maghsudi", 2025, "PAMA: Pareto multi-objective alignment", "2508.07768")
JACOBIAN_DESCENT = Paper(
    "quinton2024jacobian", "Quinton and Rey", 2024, "Jacobian Descent for Multi-Objective Optimization", "2406.16232"
)
GEM = Paper("lopezpaz2017gem", "Lopez-Paz and Ranzato", 2017, None, "1706.08840")
CAGRAD = Paper("liu2021cagrad", "Liu and others", 2021, None, "2110.14048")
IMTL = Paper("liu2021imtl", "Liu and others", 2021, "Towards Impartial Multi-task Learning")
ALIGNED_MTL = Paper("senushkin2023aligned", "Senushkin and others", 2023, None, "2305.19000")
PCGRAD = Paper("yu2020pcgrad", "Yu and others", 2020, None, "2001.06782")
GRADVAC = Paper("wang2021gradvac", "Wang and others", 2021, None, "2010.05874")
FAIRGRAD = Paper("ban2024fairgrad", "Ban and Ji", 2024, None, "2402.15638")
MODO = Paper("chen2024modo", "Chen and others", 2024, None, "2305.20057")
SDMGRAD = Paper("xiao2023sdmgrad", "Xiao and others", 2023, None, "2305.18409")
RANDOM = Paper("lin2022random", "Lin and others", 2022, None, "2111.10603")
KRUM = Paper("blanchard2017krum", "Blanchard and others", 2017)
PCD = Paper("pcd2026", "", 2026, None, "2606.29521")
CRMOGM = Paper(
    "zhou2022crmogm",
    "Zhou and others",
    2022,
    "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and Beyond",
)
