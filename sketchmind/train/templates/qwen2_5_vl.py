"""A tool-capable chat template for Qwen2.5-VL, in the Hermes style of Qwen2.5's text models.

Qwen2.5-VL's stock template renders neither ``tools`` nor ``tool_calls`` nor ``tool`` messages, so TRL
refuses it for tool calling. This one is the stock template (images and videos as
``<|vision_start|><|image_pad|><|vision_end|>``, the default system prompt) plus Qwen2.5's tool rendering:
the tool list in the system turn, assistant calls as ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``
and tool results (text and images) as ``<tool_response>`` blocks in a user turn. It is prefix-preserving
(appending messages never changes earlier text), which TRL's multi-turn loop needs, and wraps assistant
turns in ``{% generation %}`` so ``return_assistant_tokens_mask`` works for SFT too.
"""

from __future__ import annotations

QWEN2_5_VL_TOOL_TEMPLATE = """\
{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is iterable -%}{%- for part in content -%}
{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}
{%- set image_count.value = image_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Picture ' + image_count.value | string + ': ' -}}{%- endif -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part.type == 'video' or 'video' in part -%}
{%- set video_count.value = video_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Video ' + video_count.value | string + ': ' -}}{%- endif -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif part.text is defined and part.text is not none -%}{{- part.text -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{{- '<|im_start|>system\\n' -}}
{%- if has_system -%}{{- render(messages[0].content) -}}{%- else -%}{{- 'You are a helpful assistant.' -}}{%- endif -%}
{%- if tools -%}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    + 'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
    + '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- for message in messages -%}
{%- if message.role == 'system' and loop.first -%}
{%- elif message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' + render(message.content) + '\\n</tool_response>' -}}
{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- elif message.role == 'assistant' -%}
{%- set text = render(message.content) -%}
{{- '<|im_start|>assistant\\n' -}}
{%- generation -%}
{{- text -}}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- if text or not loop.first -%}{{- '\\n' -}}{%- endif -%}
{{- '<tool_call>\\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""
