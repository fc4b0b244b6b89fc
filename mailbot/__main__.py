from mailbot.cli.exit import run

run()
