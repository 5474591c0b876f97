"""Alerts for failed verification (and any task that opts in): an Airflow notifier.

Always logs the failure.  Also, when configured in the worker's / DAG processor's environment:

* ``METABACKUP_ALERT_WEBHOOK`` - an http(s) URL; the alert is POSTed there as JSON
  (``{"dag_id", "task_id", "run_id", "try_number", "error", "log_url"}``);
* ``METABACKUP_ALERT_EMAIL`` - comma-separated addresses, sent with the SMTP provider's notifier
  through the ``smtp_default`` connection (or ``METABACKUP_ALERT_SMTP_CONN_ID``).

No secret is sent: the error text is the task's own message (our messages never hold passwords).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

log = logging.getLogger(__name__)

WEBHOOK_ENV = "METABACKUP_ALERT_WEBHOOK"
EMAIL_ENV = "METABACKUP_ALERT_EMAIL"
SMTP_CONN_ENV = "METABACKUP_ALERT_SMTP_CONN_ID"


def alert_payload(context: Any) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "try_number": getattr(ti, "try_number", None),
        "error": str(exception) if exception else None,
        "log_url": getattr(ti, "log_url", None),
    }


class MetabackupFailureNotifier(BaseNotifier):
    """Log the failure; POST it to a webhook and e-mail it when configured."""

    template_fields = ()

    def notify(self, context: Any) -> None:
        payload = alert_payload(context)
        log.error("metabackup ALERT: %s.%s failed (run %s, try %s): %s", payload["dag_id"], payload["task_id"],
                  payload["run_id"], payload["try_number"], payload["error"])
        webhook = os.environ.get(WEBHOOK_ENV)
        if webhook:
            request = urllib.request.Request(webhook, data=json.dumps(payload).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - operator-configured URL
                log.info("alert posted to %s: HTTP %s", webhook.split("?")[0], response.status)
        emails = [a.strip() for a in os.environ.get(EMAIL_ENV, "").split(",") if a.strip()]
        if emails:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(to=emails, smtp_conn_id=os.environ.get(SMTP_CONN_ENV, "smtp_default"),
                         subject=f"metabackup: {payload['dag_id']}.{payload['task_id']} failed",
                         html_content=f"<pre>{json.dumps(payload, indent=2)}</pre>").notify(context)
