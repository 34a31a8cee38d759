// Every layer library lists this file so that a layer whose sources are still to come builds.
