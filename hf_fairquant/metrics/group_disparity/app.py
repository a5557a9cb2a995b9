import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("group_disparity")
launch_gradio_widget(module)
