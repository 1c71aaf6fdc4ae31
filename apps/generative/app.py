"""GAN/VAE sampling: digit grids from a seed, latent walks, and VAE reconstructions.

    python apps/generative/app.py              # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /generative

API: `Client(url).predict(seed=0, n=16, label="any", truncation=3.0, model="digits-gan",
backend="torch", api_name="/generative")` returns the grid image and the "served by" line.
"""

import gradio as gr

from apps.generative import task
from shared.serving import ui

LABELS = ["any", *[str(d) for d in range(10)]]


@ui.user_errors
def generative(seed, n, label, truncation, model, backend):
    result = task.generate(model=model, seed=seed, n=n, label=label, truncation=truncation, backend=backend,
                           fallback=True)
    return result["grid"], ui.served_line(result)


@ui.user_errors
def interpolation(seed, seed_b, steps, label, truncation, model, backend):
    result = task.interpolate(model=model, seed=seed, seed_b=seed_b, steps=steps, label=label,
                              truncation=truncation, backend=backend, fallback=True)
    return result["strip"], ui.served_line(result)


@ui.user_errors
def reconstruction(image, vae, seed, truncation, backend):
    result = task.reconstruct(image, model=vae, seed=seed, n=8, truncation=truncation, backend=backend, fallback=True)
    return result["input"], result["reconstruction"], result["neighbours"], ui.served_line(result)


with gr.Blocks(title="GAN/VAE sampling") as demo:
    gr.Markdown("# GAN/VAE sampling\nDigits drawn by the embedded class-conditional GAN and VAE. "
                "The same seed always gives the same grid.")
    with gr.Row():
        with gr.Column():
            # the samplers only: a photo autoencoder (taesd) is offered on the VAE tab, where it works
            model = ui.model_picker(task.TASK, lambda entry: entry.samples, "Model (samples and interpolation)")
        backend = ui.backend_radio(task.TASK, model)
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=task.MAX_SEED, label="Seed")
        label = gr.Dropdown(LABELS, value="any", label="Class (GAN)")
        truncation = gr.Slider(*task.TRUNCATION_RANGE, value=task.default_truncation(model.value), step=0.05,
                               label="Truncation (GAN) / temperature (VAE)",
                               info="GAN: 3 keeps almost the whole normal, lower draws cleaner, less varied digits. "
                                    "VAE: 1 samples its prior. Set to the model's default when you pick one.")
    with gr.Tab("Samples"):
        n = gr.Slider(1, task.MAX_SAMPLES, value=16, step=1, label="Samples")
        sample = gr.Button("Sample", variant="primary")
        samples = gr.Image(label="Samples", type="pil", format="png")
        sampled_by = gr.Markdown()
    with gr.Tab("Interpolation"):
        with gr.Row():
            seed_b = gr.Number(1, precision=0, minimum=0, maximum=task.MAX_SEED, label="Second seed")
            steps = gr.Slider(2, task.MAX_INTERPOLATION_STEPS, value=8, step=1, label="Steps")
        walk = gr.Button("Interpolate", variant="primary")
        strip = gr.Image(label="From the first seed to the second", type="pil", format="png")
        walked_by = gr.Markdown()
    with gr.Tab("VAE: encode an image"):
        with gr.Row():
            image = ui.ImageInput(label="A digit, dark on light (or a photo, for the photo autoencoder)")
            with gr.Column():
                vae = ui.model_picker(task.TASK, lambda entry: entry.encodes, "VAE")
                vae_backend = ui.backend_radio(task.TASK, vae)
        encode = gr.Button("Encode and decode", variant="primary")
        with gr.Row():
            seen = gr.Image(label="What the VAE reads (its input size)", type="pil", format="png")
            rebuilt = gr.Image(label="Reconstruction", type="pil", format="png")
            around = gr.Image(label="Samples around its code", type="pil", format="png")
        encoded_by = gr.Markdown()
    model.change(task.default_truncation, model, truncation, api_visibility="private")

    # each tab has its own served line and the VAE tab its own backend: one line under all three said
    # what another tab had done, and the VAE ran on the sampler's backend (found by a visitor)
    ui.clear_on(sample.click, [samples, sampled_by])
    sample.click(generative, [seed, n, label, truncation, model, backend], [samples, sampled_by],
                 api_name="generative")
    ui.clear_on(walk.click, [strip, walked_by])
    walk.click(interpolation, [seed, seed_b, steps, label, truncation, model, backend], [strip, walked_by],
               api_name="interpolation", api_visibility="undocumented")
    ui.clear_on(encode.click, [seen, rebuilt, around, encoded_by])
    ui.clear_on(model.change, [samples, sampled_by, strip, walked_by])  # the last model's answers stayed
    ui.clear_on(vae.change, [seen, rebuilt, around, encoded_by])
    encode.click(reconstruction, [image, vae, seed, truncation, vae_backend], [seen, rebuilt, around, encoded_by],
                 api_name="reconstruction", api_visibility="undocumented")


if __name__ == "__main__":
    ui.launch(demo)
