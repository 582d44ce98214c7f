"""Errors a user can cause and fix; the CLI prints them as one sentence, never a traceback."""


class UserError(Exception):
    """A mistake in what the user asked for. The message says what is wrong and how to fix it."""

    exit_code = 1


class SpecInvalid(UserError):
    """A campaign spec with problems; each problem is `path: message`."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source} has {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
