from campaignflow.app.cli import main

main()
