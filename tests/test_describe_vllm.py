"""The vLLM describer's request, checked without vLLM (it cannot be installed on these machines):
for the same clip it must carry the same frames, the same text after Qwen2.5-VL's chat template
and the same decoding as the transformers backend, whose inputs the real transformers classes
build here from a tiny Qwen2.5-VL checkpoint. What vLLM then does with the request (its own
video processor, the generation) is not run."""

import re

import numpy as np
import pytest

from extraction.describe import (
    IMAGE_PAD,
    VLMS,
    Describer,
    greedy_generation,
    vllm_request,
    vllm_sampling,
)

RNG = np.random.default_rng(0)
# chat_template.json of Qwen/Qwen2.5-VL-3B-Instruct (the same as Qwen2-VL-Instruct's), which
# the processor applies to a conversation; transcribed, since nothing can be downloaded here.
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def describer(tiny_qwen25vl_dir):
    return Describer(local_dir=tiny_qwen25vl_dir, num_frames=4, max_pixels=60 * 80)


def render(tokenizer, content: list[dict]) -> str:
    """What the Qwen2.5-VL processor's chat template makes of one user turn."""
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=QWEN25_VL_CHAT_TEMPLATE,
                                         tokenize=False, add_generation_prompt=True)


def test_the_vllm_request_has_the_transformers_backends_frames_text_and_decoding(describer, tiny_qwen25vl_dir):
    from transformers import AutoImageProcessor, AutoTokenizer

    clip = RNG.integers(0, 256, (10, 120, 160, 3), dtype=np.uint8)
    frames = describer.prepare(clip)
    assert frames.shape == (4, 60, 80, 3) and frames.dtype == np.uint8
    request = vllm_request(frames, describer.prompt, VLMS.get("qwen2.5-vl-3b"))
    assert set(request) == {"prompt", "multi_modal_data"} and set(request["multi_modal_data"]) == {"video"}

    # The same frames: vLLM gets them as one video; the transformers backend as images, whose
    # pixels are the image processor's for exactly these frames.
    assert np.array_equal(request["multi_modal_data"]["video"], frames)
    inputs = describer.requests([clip])
    processor = AutoImageProcessor.from_pretrained(tiny_qwen25vl_dir, backend="pil")
    assert np.array_equal(inputs["pixel_values"].numpy(),
                          processor(images=list(frames), return_tensors="pt")["pixel_values"].numpy())

    # The same text after the chat template: one video block for vLLM (vLLM expands its
    # placeholder to the video's tokens), one image block per frame for transformers, each
    # placeholder repeated once per merged patch as the processor would.
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25vl_dir)
    text = {"type": "text", "text": describer.prompt}
    assert request["prompt"] == render(tokenizer, [{"type": "video"}, text])
    sent = tokenizer.decode(inputs["input_ids"][0])
    assert re.sub(f"({re.escape(IMAGE_PAD)})+", IMAGE_PAD, sent) == render(tokenizer, [{"type": "image"}] * 4 + [text])
    merged = inputs["image_grid_thw"].prod(dim=-1) // processor.merge_size**2
    assert sent.count(IMAGE_PAD) == int(merged.sum())

    # The same decoding: greedy with at most max_new_tokens, no repetition penalty, whatever the
    # checkpoint's generation_config says (the tiny one, like Qwen's, asks for sampling).
    new_tokens = describer.info.settings["max_new_tokens"]
    sampling, greedy = vllm_sampling(new_tokens), greedy_generation(new_tokens)
    assert sampling["max_tokens"] == greedy["max_new_tokens"] == 75
    assert sampling["temperature"] == 0 and greedy["do_sample"] is False and greedy["num_beams"] == 1
    assert sampling["repetition_penalty"] == greedy["repetition_penalty"] == 1.0


def test_the_other_vlms_take_their_vllm_prompt_from_the_chat_template():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="'internvl2.5-4b': its vLLM prompt comes from the checkpoint's chat"):
        vllm_request(frames, "Describe.", VLMS.get("internvl2.5-4b"))
    seen = []
    request = vllm_request(frames, "Describe.", VLMS.get("eagle2-2b"), lambda m: seen.append(m) or "rendered")
    assert request["prompt"] == "rendered" and seen == [[{"role": "user", "content": "<video>\nDescribe."}]]
