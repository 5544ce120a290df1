"""The HTML pages (the report, the web app) rendered from Jinja2 templates in viz/templates/, autoescaped."""

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def environment() -> Environment:
    """Templates are read once, escaped as HTML, and a name missing from a page's context is an error."""
    return Environment(
        loader=PackageLoader("medsagan.viz", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(name: str, **context) -> str:
    """The template `name` (such as "report.html") filled with `context`."""
    return environment().get_template(name).render(**context)
