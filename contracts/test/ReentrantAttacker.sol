// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IJobConsumer} from "../src/interfaces/IJobConsumer.sol";
import {JobMarket} from "../src/JobMarket.sol";

/// @title ReentrantAttacker
/// @notice Test-only. Acts as a requester with a hostile consumer callback and as a provider payee
/// (voucher redemption, earnings) whose `receive` re-enters the market with a call chosen by the test.
contract ReentrantAttacker is IJobConsumer {
    enum Mode {
        Quiet,
        Reenter,
        Revert,
        BurnGas,
        ReturnBomb
    }

    uint256 private constant CALLBACK_GAS = 200_000;

    JobMarket public immutable market;
    Mode public mode;
    bytes public replay;
    uint256 public reentryAttempts;
    uint256 public reentrySuccesses;
    bytes public lastReentryError;
    uint256 public callbacksReceived;
    uint256 private _salt;

    constructor(JobMarket market_) {
        market = market_;
    }

    function configure(Mode mode_, bytes calldata replay_) external {
        mode = mode_;
        replay = replay_;
    }

    function requestJob(bytes32 modelId, bytes calldata input, uint256 deadline) external payable returns (bytes32) {
        return market.requestJob{value: msg.value}(
            modelId, bytes32(0), input, deadline, address(0), address(this), CALLBACK_GAS, false, ++_salt
        );
    }

    /// Two requests with the same terms and salt: the second must be refused (same id).
    function requestTwice(bytes32 modelId, bytes calldata input, uint256 deadline) external payable {
        uint256 half = msg.value / 2;
        market.requestJob{value: half}(modelId, bytes32(0), input, deadline, address(0), address(0), 0, false, 7);
        market.requestJob{value: half}(modelId, bytes32(0), input, deadline, address(0), address(0), 0, false, 7);
    }

    function deposit() external payable {
        market.deposit{value: msg.value}();
    }

    function redeem(JobMarket.SignedVoucher[] calldata vouchers) external returns (uint256) {
        return market.redeemVouchers(vouchers);
    }

    function withdrawEarnings() external {
        market.withdrawEarnings();
    }

    /// Any market call made as this contract (deposit, requestWithdrawal, withdraw, ...).
    function act(bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory result) = address(market).call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    function onJobResult(bytes32, bytes32, bytes calldata) external {
        callbacksReceived += 1;
        _misbehave();
    }

    receive() external payable {
        _misbehave();
    }

    function _misbehave() private {
        Mode m = mode;
        if (m == Mode.Reenter) {
            reentryAttempts += 1;
            (bool ok, bytes memory err) = address(market).call(replay);
            if (ok) reentrySuccesses += 1;
            lastReentryError = err;
        } else if (m == Mode.Revert) {
            revert("attacker refuses");
        } else if (m == Mode.BurnGas) {
            while (true) {}
        } else if (m == Mode.ReturnBomb) {
            assembly {
                return(0, 100000)
            }
        }
    }
}
