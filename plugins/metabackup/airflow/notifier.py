"""Alerts for failed verification (and any task that opts in): an Airflow notifier.

Always logs the failure.  Also, when configured in the worker's / DAG processor's environment:

* ``METABACKUP_ALERT_WEBHOOK`` - an http(s) URL; the alert is POSTed there as JSON
  (``{"dag_id", "task_id", "run_id", "try_number", "error", "log_url"}``);
* ``METABACKUP_ALERT_EMAIL`` - comma-separated addresses, sent with the SMTP provider's notifier
  through the ``smtp_default`` connection (or ``METABACKUP_ALERT_SMTP_CONN_ID``), from
  ``METABACKUP_ALERT_FROM`` or else the connection's ``from_email`` extra.

Alarms that are raised once and cleared once (ALM-12034 from a backup run's ``record``, the RPO
alarm from ``metabackup_watch``; see :mod:`metabackup.alarms`) go through the same channels with
:func:`send_alarm_change`.

Each channel is tried on its own: a webhook that is down does not stop the e-mail, and neither
stops the other's attempt; a channel that fails is logged with its reason.
No secret is sent: the error text is the task's own message (our messages never hold passwords).
"""

from __future__ import annotations

import html
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
FROM_ENV = "METABACKUP_ALERT_FROM"


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
        send_everywhere(payload, f"metabackup: {payload['dag_id']}.{payload['task_id']} failed", context)


def raise_alarm(alarm: dict[str, Any], context: Any) -> None:
    """A critical alarm raised by a task itself (e.g. ALM-12035 when an in-place restore's rollback
    fails): the alarm's fields plus the task's, through every configured channel."""
    payload = {**alert_payload(context), **alarm}
    log.critical("metabackup ALARM %s: %s", alarm.get("alarm"), json.dumps(payload, default=str))
    send_everywhere(payload, f"metabackup CRITICAL {alarm.get('alarm')}: {alarm.get('title')} "
                             f"({alarm.get('task')} {alarm.get('source')})", context)


def send_alarm_change(note: dict[str, Any], context: Any) -> None:
    """An alarm raised or cleared (:mod:`metabackup.alarms`: ``status`` ``raised`` or ``cleared``)
    with the task's fields, through every configured channel: the subject says which."""
    payload = {**alert_payload(context), **note}
    what = f"{note.get('alarm')}: {note.get('title')} ({note.get('task')} {note.get('source')})"
    if note.get("status") == "cleared":
        log.warning("metabackup alarm CLEARED %s: %s", note.get("alarm"), json.dumps(payload, default=str))
        subject = f"metabackup CLEARED {what}"
    else:
        log.critical("metabackup ALARM %s: %s", note.get("alarm"), json.dumps(payload, default=str))
        subject = f"metabackup ALARM {what}"
    send_everywhere(payload, subject, context)


def send_everywhere(payload: dict[str, Any], subject: str, context: Any) -> None:
    """POST ``payload`` to the webhook and e-mail it, each when configured, each on its own."""
    webhook = os.environ.get(WEBHOOK_ENV)
    if webhook:
        try:
            post_webhook(webhook, payload)
        except Exception as exc:  # the alert still goes by e-mail, and the failure is in the log
            log.error("metabackup alert: POST to %s failed: %s", webhook.split("?")[0], exc)
    emails = [a.strip() for a in os.environ.get(EMAIL_ENV, "").split(",") if a.strip()]
    if emails:
        try:
            send_email(emails, payload, context, subject)
        except Exception as exc:
            log.error("metabackup alert: e-mail to %s failed: %s", ", ".join(emails), exc)


def post_webhook(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - operator-configured URL
        log.info("alert posted to %s: HTTP %s", url.split("?")[0], response.status)


def send_email(to: list[str], payload: dict[str, Any], context: Any, subject: str) -> None:
    """Through the SMTP provider's notifier, called directly (so with subject and body given,
    nothing is rendered as a template); the payload is escaped for HTML."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    body = html.escape(json.dumps(payload, indent=2, default=str))
    SmtpNotifier(to=to, from_email=os.environ.get(FROM_ENV) or None,
                 smtp_conn_id=os.environ.get(SMTP_CONN_ENV, "smtp_default"),
                 subject=subject,
                 html_content=f"<pre>{body}</pre>").notify(context)
    log.info("alert e-mailed to %s", ", ".join(to))
