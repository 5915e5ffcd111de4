"""The SketchMind puzzle demo: ``python app.py`` (or ``sketchmind demo``), then open http://127.0.0.1:7860."""

from sketchmind.demo import DEFAULT_CONCURRENCY, MAX_FILE_SIZE, MAX_QUEUE, build_app

demo = build_app()  # named `demo` so `gradio app.py` can hot-reload it

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=MAX_QUEUE)
    demo.launch(server_name="127.0.0.1", max_file_size=MAX_FILE_SIZE)
