"""Email templates: Django templates named `email/<name>/subject.txt`, `body.txt` and
(optionally) `body.html`, looked up in every app's `templates/` folder and in the project's
`templates/` folder (so a deployment adds or overrides templates without code).

Rendering is strict where Django's is lenient: a variable the context does not hold is an
error naming the variable (Django would print nothing), and a subject that renders to more
than one line is refused (header injection). Because of that strictness a filter does not
rescue a missing variable (`{{ title|default:"…" }}` still needs `title`): write optional
values as `{% if title %}…{% endif %}`. Text parts are rendered without HTML
escaping, the HTML part with it.

Built-in templates: `account_verification` (`verify_url`, optional `name`), `reminder`
(`message`, optional `name`, `action_url`), `job_finished` (`job_id`, `kind`, `status`,
optional `job_url`), `daily_report` (`date`, optional `summary`; the report attached as a
PDF) and `newsletter` (`subject`, `message`; for campaigns).
"""

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.template import Context, Engine, TemplateDoesNotExist, TemplateSyntaxError

from jobs.errors import OffloadError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
# Rendered in place of a variable the context lacks; found afterwards, it names the variable.
_MISSING = "\ue000%s\ue001"
_MISSING_RE = re.compile("\ue000(.*?)\ue001")
PARTS = ("subject.txt", "body.txt", "body.html")


class EmailTemplateError(OffloadError):
    """A template that does not exist, does not compile or misses a variable."""

    code = "invalid_template"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


@cache
def _engine() -> Engine:
    dirs = [d for t in settings.TEMPLATES for d in t.get("DIRS", [])]
    return Engine(dirs=dirs, app_dirs=True, string_if_invalid=_MISSING, autoescape=True)


def _load(name: str, part: str, *, required: bool) -> Any:
    try:
        return _engine().get_template(f"email/{name}/{part}")
    except TemplateDoesNotExist:
        if required:
            raise EmailTemplateError(
                f"Email template {name!r} has no {part}.",
                fields={"template": [f"{name!r} has no {part}"]},
            ) from None
        return None
    except TemplateSyntaxError as exc:
        raise EmailTemplateError(
            f"Email template {name!r} does not compile ({part}): {exc}",
            fields={"template": [f"syntax error in {part}: {exc}"]},
        ) from None


def template_check(name: str) -> None:
    """Refuse an unknown name or a template with a syntax error (a 400 at submit)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise EmailTemplateError(
            "A template name is 1-64 lower-case letters, digits and underscores.",
            fields={"template": ["not a template name"]},
        )
    if _load(name, "subject.txt", required=False) is None:
        raise EmailTemplateError(
            f"There is no email template {name!r}. Built-in: {', '.join(templates_builtin())}.",
            code="unknown_template",
            fields={"template": [f"unknown template {name!r}"]},
        )
    for part in PARTS:
        _load(name, part, required=part != "body.html")


def templates_builtin() -> list[str]:
    from pathlib import Path

    folder = Path(__file__).resolve().parent / "templates" / "email"
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _missing(output: str, name: str, part: str) -> None:
    found = sorted(set(_MISSING_RE.findall(output)))
    if found:
        raise EmailTemplateError(
            f"Email template {name!r} uses {', '.join(found)} in {part}, which the context "
            "does not give.",
            code="missing_variable",
            fields={"context": {variable: ["missing"] for variable in found}},
        )


def email_render(*, name: str, context: dict[str, Any]) -> Rendered:
    """Render the three parts; raises EmailTemplateError naming a missing variable or a
    subject with a line break."""
    template_check(name)
    subject = _load(name, "subject.txt", required=True).render(Context(context, autoescape=False))
    _missing(subject, name, "subject.txt")
    subject = subject.removesuffix("\n").removesuffix("\r")
    if "\r" in subject or "\n" in subject:
        raise EmailTemplateError(
            f"The subject of template {name!r} renders to more than one line: a line break "
            "(CR/LF) in a header is refused. Check the context values the subject uses.",
            code="header_injection",
            fields={"context": ["a value used in the subject contains CR or LF"]},
        )
    subject = subject.strip()
    text = _load(name, "body.txt", required=True).render(Context(context, autoescape=False))
    _missing(text, name, "body.txt")
    html_template = _load(name, "body.html", required=False)
    html = None
    if html_template is not None:
        html = html_template.render(Context(context, autoescape=True))
        _missing(html, name, "body.html")
    return Rendered(subject=subject, text=text, html=html)
