"""What a request costs the server beside its model (README, "Batching under load"): gradio's
work per call that no answer needs is not done, and what a page or a deep link reads is the same."""

import gradio as gr
from gradio.state_holder import SessionState

from shared.serving import ui


def page() -> gr.Blocks:
    with gr.Blocks() as demo:
        image = ui.ImageInput(label="Image")
        with gr.Row():
            labels, served = gr.Label(label="Labels"), gr.Markdown("served by")
        gr.Button("Go").click(lambda x: ({"a": 1.0}, "ok"), image, [labels, served], api_name="go")
    return demo


def gradio_configs(demo: gr.Blocks) -> dict[int, dict]:
    """The configs gradio 6 made at the start of every session."""
    blocks = demo.default_config.blocks
    return {key: demo.default_config.config_for_block(key, [], block) for key, block in blocks.items()
            if key in demo.blocks}


def test_a_session_makes_the_page_configs_only_when_a_deep_link_reads_them():
    from apps.classification.app import demo

    session = SessionState(demo)  # what every API call without a session gets
    assert session.config_values == {}
    assert {config["id"]: config for config in session.components} == {
        key: config for key, config in gradio_configs(demo).items() if config}


def test_an_event_s_update_of_a_block_is_what_its_deep_link_shows():
    demo = page()
    labels = next(block for block in demo.blocks.values() if isinstance(block, gr.Label))
    session = SessionState(demo)
    session._update_value_in_config(labels._id, {"label": "cat"})  # as postprocess_data does
    shown = {config["id"]: config for config in session.components}
    assert shown[labels._id]["props"]["value"] == {"label": "cat"}
    expected = gradio_configs(demo)
    assert {key: config for key, config in shown.items() if key != labels._id} == {
        key: config for key, config in expected.items() if key != labels._id and config}


def test_the_queue_does_not_sum_up_past_events_for_the_dashboard_that_is_off():
    demo = ui.harden(page())
    records = [{"function": "go", "status": "success", "process_time": 0.1, "time": 0.0, "session_hash": "s"}] * 3
    assert ui.SAFE_SETTINGS["enable_monitoring"] is False
    assert demo._queue.compute_analytics_summary(records) == {"functions": {}}
