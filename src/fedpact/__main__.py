from fedpact.cli.main import app

app(prog_name="fedpact")
