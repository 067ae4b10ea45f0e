"""Package data, not code: the Jinja2 templates of every layer (one folder per layer or service),
the audit report's template and CSS, and schoolctl's Moodle plugin. Found with
`schoolctl.resources.templates()`."""
