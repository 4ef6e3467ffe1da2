from docingest.cli import app

app(prog_name="docingest")
