from posecast.cli import main

main()
