from kdad.cli import entry

entry()
