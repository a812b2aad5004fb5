"""How the policy is doing while it drives: fast enough, keeping up, still answering, who has the arms."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import AutonomyStatus


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


class AutonomyPanel(Widget):
    """Policy, strategy, chunk latency and delay, ticks without an action, the intervention indicator
    (which arms the operator holds) and `LOST` in red when the policy stopped answering."""

    autonomy: reactive[AutonomyStatus | None] = reactive(None)

    def render(self) -> Text:
        status = self.autonomy
        if status is None:
            return Text("policy not running: enter a checkpoint or tcp:// address, then press a", style="dim")
        if status.lost:
            badge = Text(" LOST ", style="bold white on red")
            badge.append("  the policy stopped answering or was refused; the rig holds", style="bold red")
        elif status.intervention:
            badge = Text(
                f" OPERATOR HOLDS {' + '.join(status.intervention).upper()} ", style="bold black on yellow"
            )
        elif status.policy.startswith("loading"):
            badge = Text(" loading the policy… ", style="bold black on grey70")
        else:
            badge = Text(" policy drives ", style="bold black on dodger_blue1")
        delay = "–" if status.delay_ticks is None else f"{status.delay_ticks} ticks"
        text = Text.assemble(
            badge,
            "\n",
            (status.policy, "bold"),
            f"  strategy {status.strategy}\n",
            f"chunks {status.chunks}  latency {_ms(status.latency_ms)}  delay {delay}  ",
            (f"starved {status.starved_ticks}", "red" if status.starved_ticks else ""),
        )
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text
