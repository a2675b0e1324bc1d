"""moert serve's reading of a checkpoint's tokenizer_config.json and chat
template (moert.server.Checkpoint): files that are malformed in ways a
server must refuse with moert.Error naming the file, not a traceback of
another exception type.  Inputs found by fuzz/python/fuzz_server.py.

Skipped without fastapi, uvicorn, jinja2 (scripts/install-deps.sh installs
them).
"""

import json

import pytest

moert = pytest.importorskip("moert", reason="build the moert module (scripts/build.sh)",
                            exc_type=ImportError)

for _package in ("fastapi", "uvicorn", "jinja2"):
    pytest.importorskip(_package, reason=f"moert serve's tests need the '{_package}' package "
                                         "(scripts/install-deps.sh installs it)")
from moert import server  # noqa: E402


class _Tokenizer:
    """What Checkpoint uses of a tokenizers.Tokenizer."""

    @staticmethod
    def token_to_id(token):
        return {"<s>": 1, "</s>": 2}.get(token)


def checkpoint(directory):
    return server.Checkpoint(str(directory), _Tokenizer())


def test_named_templates_with_a_name_that_is_not_a_string(tmp_path):
    """chat_template as a list of named templates, one named by a list: that
    entry is skipped (it used to raise TypeError: unhashable type)."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": ["x"], "template": "no"},
        {"name": "default", "template": "{{ messages[0]['content'] }}!"}]}))
    assert checkpoint(tmp_path).render([{"role": "user", "content": "a"}]) == "a!"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": {"a": 1}, "template": "no"}]}))
    c = checkpoint(tmp_path)
    assert c.template is None
    with pytest.raises(server.ApiError, match="no chat template"):
        c.render([{"role": "user", "content": "a"}])


def test_tokenizer_config_nested_too_deeply(tmp_path):
    """JSON nested deeper than Python's recursion limit: moert.Error naming
    the file (it used to raise RecursionError)."""
    path = tmp_path / "tokenizer_config.json"
    path.write_text("[" * 100000)
    with pytest.raises(moert.Error, match="tokenizer_config.json: cannot be read"):
        checkpoint(tmp_path)


@pytest.mark.parametrize("template", ["{% for %}", "{{ messages[0] ", "{% endif %}",
                                      "{{" + "(" * 10000 + "1" + ")" * 10000 + "}}"])
def test_chat_template_that_does_not_compile(tmp_path, template):
    """A template with a syntax error: moert.Error naming tokenizer_config.json
    or chat_template.jinja (it used to raise jinja2's TemplateSyntaxError,
    or RecursionError for deep nesting, out of the server's start)."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    with pytest.raises(moert.Error, match=r"tokenizer_config.json \(chat_template\): the chat "
                                          r"template does not compile"):
        checkpoint(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(template)
    with pytest.raises(moert.Error, match="chat_template.jinja: the chat template does not "
                                          "compile"):
        checkpoint(tmp_path)


def test_chat_template_file_not_utf8(tmp_path):
    """chat_template.jinja that is not UTF-8: moert.Error naming it (it used
    to raise UnicodeDecodeError)."""
    (tmp_path / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    with pytest.raises(moert.Error, match="chat_template.jinja: cannot be read"):
        checkpoint(tmp_path)


@pytest.mark.parametrize("template, message", [
    # A tool call without arguments: tojson of an undefined value.
    ("{% for m in messages %}{{ m.tool_calls[0].function.arguments | tojson }}{% endfor %}",
     {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}),
    # An extra field of another type than the template expects.
    ("{{ messages[0].name + '!' }}", {"role": "user", "content": "a", "name": 5}),
    ("{{ 1 // messages[0].weight }}", {"role": "user", "content": "a", "weight": 0}),
])
def test_template_failing_on_the_messages_is_400(tmp_path, template, message):
    """A template that raises on the client's messages, with something other
    than jinja2's TemplateError: the request's 400, not an exception escaping
    the handler (it used to be a 500 with a TypeError traceback)."""
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    with pytest.raises(server.ApiError, match="the chat template failed on the messages") as e:
        checkpoint(tmp_path).render([message])
    assert e.value.status == 400 and e.value.param == "messages"
