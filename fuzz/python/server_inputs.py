"""Inputs shared by fuzz_server.py and fuzz/make_corpus.py."""

# A template in the style of current chat models: a system prompt, tool
# calls and tool answers, content as a string.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}{{ '<|im_start|>tool\\n' + message.content | string + "
    "'<|im_end|>\\n' }}"
    "{%- elif message.tool_calls is defined %}{{ '<|im_start|>assistant\\n' }}"
    "{%- for call in message.tool_calls %}{{ call.function.name | default('') }}"
    "{{ call.function.arguments | tojson }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif message.role != 'system' or not loop.first %}"
    "{{ '<|im_start|>' + message.role + '\\n' + (message.content | default('')) + "
    "'<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "the quick brown fox"}],
    [{"role": "system", "content": "the lazy dog"},
     {"role": "user", "content": "the quick brown fox"},
     {"role": "assistant", "content": "jumps over"},
     {"role": "user", "content": "the lazy dog"}],
    [{"role": "user", "content": "fox"},
     {"role": "assistant", "tool_calls": [{"type": "function", "function": {
         "name": "f", "arguments": {"x": 1}}}]},
     {"role": "tool", "content": "1", "tool_call_id": "0"}],
]
