"""Asking on a terminal: every answer goes through its check and is asked again until it passes.

Input, secret input (no echo: getpass) and output are injected, so the flow is testable without
a terminal. A refused answer prints the check's message, which names the variable.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Sequence
from typing import TextIO, TypeVar

from .answers import AnswerError

T = TypeVar("T")


class Aborted(Exception):
    """The operator ended input (Ctrl-D) or interrupted (Ctrl-C)."""


class Prompter:
    def __init__(
        self,
        read: Callable[[str], str] = input,
        read_secret: Callable[[str], str] = getpass.getpass,
        out: TextIO | None = None,
    ) -> None:
        self._read = read
        self._read_secret = read_secret
        self.out = out or sys.stdout

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self.say()
        self.say(f"== {title} ==")

    def refuse(self, error: Exception) -> None:
        self.say(f"  ! {error}")
        self.say("  Please answer again.")

    def _input(self, text: str, secret: bool = False) -> str:
        try:
            return (self._read_secret if secret else self._read)(text)
        except (EOFError, KeyboardInterrupt):
            self.say()
            raise Aborted from None

    def secret(self, question: str) -> str:
        """One answer, not echoed and not checked."""
        return self._input(f"{question}: ", secret=True)

    def ask(self, question: str, default: str, check: Callable[[str], T]) -> T:
        """Ask until ``check`` accepts the answer (Enter takes the default)."""
        shown = f" [{default}]" if default else ""
        while True:
            raw = self._input(f"{question}{shown}: ").strip()
            try:
                return check(raw or default)
            except AnswerError as exc:
                self.refuse(exc)

    def ask_secret(self, question: str, check: Callable[[str], str], keep: bool) -> str | None:
        """Ask without echo; with ``keep``, Enter keeps the current value (returns None)."""
        hint = " [Enter keeps the current one]" if keep else ""
        while True:
            raw = self._input(f"{question}{hint}: ", secret=True)
            if not raw and keep:
                return None
            try:
                return check(raw)
            except AnswerError as exc:
                self.refuse(exc)

    def new_password(self, question: str) -> str:
        while True:
            first = self._input(f"{question}: ", secret=True)
            if not first:
                self.say("  ! the password must not be empty")
                continue
            if self._input("Again, to confirm: ", secret=True) == first:
                return first
            self.say("  ! the two passwords differ")

    def confirm(self, question: str, default: bool) -> bool:
        shown = "Y/n" if default else "y/N"
        while True:
            raw = self._input(f"{question} [{shown}]: ").strip().lower()
            if not raw:
                return default
            if raw in ("y", "yes"):
                return True
            if raw in ("n", "no"):
                return False
            self.say("  ! answer y or n")

    def choose(self, question: str, choices: Sequence[str], default: str) -> str:
        def check(value: str) -> str:
            if value not in choices:
                raise AnswerError(question, f"choose one of {', '.join(choices)}")
            return value

        return self.ask(f"{question} ({'/'.join(choices)})", default, check)
