"""One line per thing that happened, to the Prefect run log and to the CLI's console."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

console_log = logging.getLogger("campaignflow.progress")


def say(message: str) -> None:
    console_log.info(message)
    try:
        get_run_logger().info(message)
    except MissingContextError:
        pass
